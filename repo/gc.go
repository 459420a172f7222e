package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
)

// Garbage collection runs beside writers without stopping them. Its safety
// argument is in FORMAT.md ("Garbage collection"); in short: a pack is
// deleted only if it was unreferenced at two gc runs at least the grace
// period apart, writers never deduplicate against a pack that a gc run has
// condemned, and every time is the backend's.

const (
	gcPrefix  = "gc/"
	gcLockKey = "locks/gc"
	aadGC     = "blockmover gc state v1"
)

// DefaultGrace is how long a pack stays condemned before gc deletes it. It
// must exceed the longest export (or import) that may run beside gc.
const DefaultGrace = 24 * time.Hour

// gcState is the sealed record of one gc run: the packs that were
// unreferenced at that run. Its time is the backend's ModTime of the object.
type gcState struct {
	Version   int  `json:"version"`
	Condemned []ID `json:"condemned"`
}

// GCOptions tune a garbage collection.
type GCOptions struct {
	// Grace is the minimum time, by the backend's clock, between the gc run
	// that first finds a pack unreferenced and the run that deletes it.
	// Zero deletes unreferenced packs at once: only safe when no export or
	// import runs at the same time.
	Grace time.Duration
	// RepackThreshold: a pack whose unreferenced bytes are at least this
	// fraction of it has its live blobs copied to new packs, and is then
	// condemned (default 0.1).
	RepackThreshold float64
	// DryRun reports what would be done, and changes nothing.
	DryRun bool
	// Log, if set, receives one line per step.
	Log func(string)
}

// GCResult reports what a gc run found and did.
type GCResult struct {
	Snapshots      int   `json:"snapshots"`
	LiveBlobs      int   `json:"live_blobs"`
	Packs          int   `json:"packs"`
	LiveBytes      int64 `json:"live_bytes"`
	Condemned      int   `json:"condemned"`       // packs unreferenced now
	Deleted        int   `json:"deleted"`         // packs deleted by this run
	DeletedBytes   int64 `json:"deleted_bytes"`   // their size
	Repacked       int   `json:"repacked"`        // packs whose live blobs were copied
	RepackedBytes  int64 `json:"repacked_bytes"`  // live bytes copied
	Waiting        int   `json:"waiting"`         // condemned packs still in their grace period
	IndexFiles     int   `json:"index_files"`     // index files read
	IndexFilesLeft int   `json:"index_files_now"` // after compaction
	TempFiles      int   `json:"temp_files"`      // stale temporary files deleted (fs)
	TempBytes      int64 `json:"temp_bytes"`      // their size
}

// minTempAge is the least age of a temporary file gc deletes, whatever
// the grace period: a write in progress never leaves its file that long.
const minTempAge = time.Hour

// ErrGCLocked: another gc holds the gc lock.
var ErrGCLocked = errors.New("another gc is running")

type gcPack struct {
	size, total, live int64
	modTime           time.Time
	indexed           bool
}

// GC marks every blob reachable from every snapshot, repacks packs that
// are mostly garbage, condemns unreferenced packs, deletes the packs that
// were condemned at least Grace ago (and unindexed packs older than
// Grace, left by interrupted exports), compacts the index files, and on a
// backend.TempCleaner deletes the temporary files that interrupted writes
// left (those older than Grace, and at least an hour).
//
// Memory: one bit per indexed blob for the mark, plus the index itself;
// pages and index files are streamed.
func (r *Repository) GC(ctx context.Context, opts GCOptions) (*GCResult, error) {
	if opts.RepackThreshold == 0 {
		opts.RepackThreshold = 0.1
	}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			opts.Log(fmt.Sprintf(format, args...))
		}
	}
	start, err := r.lockGC(ctx, opts.DryRun)
	if err != nil {
		return nil, err
	}
	if !opts.DryRun {
		defer r.be.Delete(context.WithoutCancel(ctx), gcLockKey)
	}
	g := &gc{r: r, opts: opts, logf: logf, start: start, res: &GCResult{}}
	if err := g.run(ctx); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	return g.res, nil
}

// lockGC takes the gc lock and returns its time by the backend's clock: the
// start of this run.
func (r *Repository) lockGC(ctx context.Context, dryRun bool) (time.Time, error) {
	host, _ := os.Hostname()
	body := fmt.Appendf(nil, `{"host":%q,"pid":%d}`, host, os.Getpid())
	key := gcLockKey
	if dryRun {
		key = fmt.Sprintf("locks/gc-dry-run-%x", newRandom(8))
		defer r.be.Delete(context.WithoutCancel(ctx), key)
	}
	if err := r.be.Put(ctx, key, body); err != nil {
		if errors.Is(err, backend.ErrExists) {
			info := ""
			if oi, err := r.be.Stat(ctx, key); err == nil {
				info = fmt.Sprintf(" since %s", oi.ModTime.UTC().Format(time.RFC3339))
			}
			return time.Time{}, fmt.Errorf("%w: %s exists%s; delete it if no gc is running", ErrGCLocked, key, info)
		}
		return time.Time{}, fmt.Errorf("taking the gc lock: %w", err)
	}
	oi, err := r.be.Stat(ctx, key)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the gc lock's time: %w", err)
	}
	return oi.ModTime, nil
}

type gc struct {
	r     *Repository
	opts  GCOptions
	logf  func(string, ...any)
	start time.Time
	res   *GCResult

	snapIDs    []ID     // listed at the start, before the index
	indexFiles []string // read at the start, replaced at the end
	packs      map[ID]*gcPack
	marked     bitmap // by position in the index's sorted array
	states     []gcStateInfo
}

// bitmap is one bit per index position.
type bitmap []uint64

func (b bitmap) get(i int) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b bitmap) set(i int)      { b[i>>6] |= 1 << (i & 63) }

type gcStateInfo struct {
	key       string
	time      time.Time
	condemned []ID
}

func (g *gc) run(ctx context.Context) error {
	r := g.r
	// Snapshots first, then the index: an export writes its index files
	// before its snapshot, so every snapshot listed here has its chunks in
	// an index file listed below. (Snapshots written later are protected
	// by the grace period, see FORMAT.md.)
	var err error
	if g.snapIDs, err = r.SnapshotIDs(ctx); err != nil {
		return err
	}
	// A fresh view of the index: everything written until now.
	if err := r.be.List(ctx, indexPrefix, func(oi backend.ObjectInfo) error {
		g.indexFiles = append(g.indexFiles, oi.Key)
		return nil
	}); err != nil {
		return fmt.Errorf("listing index: %w", err)
	}
	g.res.IndexFiles = len(g.indexFiles)
	r.idx = newIndex()
	for _, name := range g.indexFiles {
		packs, err := r.readIndexFile(ctx, name)
		if err != nil {
			return fmt.Errorf("%w (run mover check; mover repair index rebuilds the index)", err)
		}
		for _, p := range packs {
			r.idx.add(p.ID, p.Key, p.Blobs)
		}
	}
	r.idx.mu.Lock()
	r.idx.merge()
	r.idx.mu.Unlock()
	if err := g.loadStates(ctx); err != nil {
		return err
	}
	g.packs = map[ID]*gcPack{}
	if err := r.be.List(ctx, dataPrefix, func(oi backend.ObjectInfo) error {
		id, err := ParseID(oi.Key[strings.LastIndexByte(oi.Key, '/')+1:])
		if err != nil || PackKey(id) != oi.Key {
			return nil
		}
		g.packs[id] = &gcPack{size: oi.Size, modTime: oi.ModTime}
		return nil
	}); err != nil {
		return fmt.Errorf("listing packs: %w", err)
	}
	g.res.Packs = len(g.packs)
	if err := g.mark(ctx); err != nil {
		return err
	}
	if err := g.account(ctx); err != nil {
		return err
	}
	dead, repack := g.classify()
	if !g.opts.DryRun && len(repack) > 0 {
		if err := g.repack(ctx, repack); err != nil {
			return err
		}
		dead = append(dead, repack...)
	} else {
		g.res.Repacked = len(repack)
	}
	slices.SortFunc(dead, func(a, b ID) int { return strings.Compare(a.String(), b.String()) })
	g.res.Condemned = len(dead)
	deletable := g.deletable(dead)
	g.res.Waiting = len(dead) - len(deletable)
	for _, id := range g.unindexedOld() {
		deletable = append(deletable, id)
	}
	if g.opts.DryRun {
		g.res.Deleted = len(deletable)
		for _, id := range deletable {
			g.res.DeletedBytes += g.packs[id].size
		}
		return nil
	}
	if err := g.saveState(ctx, dead); err != nil {
		return err
	}
	deleted := map[ID]bool{}
	for _, id := range deletable {
		if err := r.be.Delete(ctx, PackKey(id)); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("deleting pack %s: %w", id.Short(), err)
		}
		deleted[id] = true
		g.res.Deleted++
		g.res.DeletedBytes += g.packs[id].size
	}
	g.logf("deleted %d packs (%d bytes); %d condemned packs wait for their grace period", g.res.Deleted, g.res.DeletedBytes, g.res.Waiting)
	if tc, ok := r.be.(backend.TempCleaner); ok {
		n, size, err := tc.RemoveStaleTemp(ctx, max(g.opts.Grace, minTempAge))
		g.res.TempFiles, g.res.TempBytes = n, size
		if err != nil {
			return fmt.Errorf("removing stale temporary files: %w", err)
		}
		if n > 0 {
			g.logf("deleted %d stale temporary files (%d bytes) left by interrupted writes", n, size)
		}
	}
	if err := g.compact(ctx, deleted); err != nil {
		return err
	}
	return g.pruneStates(ctx)
}

// loadStates reads the records of earlier gc runs.
func (g *gc) loadStates(ctx context.Context) error {
	var infos []backend.ObjectInfo
	if err := g.r.be.List(ctx, gcPrefix, func(oi backend.ObjectInfo) error {
		infos = append(infos, oi)
		return nil
	}); err != nil {
		return fmt.Errorf("listing gc states: %w", err)
	}
	for _, oi := range infos {
		st, err := g.r.readGCState(ctx, oi.Key)
		if err != nil {
			return err
		}
		g.states = append(g.states, gcStateInfo{key: oi.Key, time: oi.ModTime, condemned: st.Condemned})
	}
	slices.SortFunc(g.states, func(a, b gcStateInfo) int { return a.time.Compare(b.time) })
	return nil
}

func (r *Repository) readGCState(ctx context.Context, key string) (*gcState, error) {
	data, err := backend.ReadAll(ctx, r.be, key, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	if fileID(data).String() != strings.TrimPrefix(key, gcPrefix) {
		return nil, fmt.Errorf("gc state %s: %w: content does not match its name", key, ErrAuth)
	}
	plain, err := open(r.aead, nil, data, []byte(aadGC))
	if err != nil {
		return nil, fmt.Errorf("gc state %s: %w", key, err)
	}
	var st gcState
	if err := json.Unmarshal(plain, &st); err != nil {
		return nil, fmt.Errorf("gc state %s: %w: %w", key, errFormat, err)
	}
	return &st, nil
}

// loadCondemned marks the packs that the newest gc run condemned, so that
// this writer does not deduplicate against them. Each run lists every pack
// unreferenced at that run, so the newest state is the current view; a
// pack that older states listed but the newest does not was found
// referenced again, and is usable.
func (r *Repository) loadCondemned(ctx context.Context) error {
	var newest backend.ObjectInfo
	if err := r.be.List(ctx, gcPrefix, func(oi backend.ObjectInfo) error {
		if newest.Key == "" || oi.ModTime.After(newest.ModTime) || oi.ModTime.Equal(newest.ModTime) && oi.Key > newest.Key {
			newest = oi
		}
		return nil
	}); err != nil {
		return fmt.Errorf("listing gc states: %w", err)
	}
	if newest.Key == "" {
		return nil
	}
	st, err := r.readGCState(ctx, newest.Key)
	if errors.Is(err, backend.ErrNotFound) {
		return r.loadCondemned(ctx) // pruned meanwhile: a newer one exists
	}
	if err != nil {
		return err
	}
	r.idx.condemn(st.Condemned)
	return nil
}

// mark sets a bit for every blob reachable from a snapshot: pages and the
// chunks they list.
func (g *gc) mark(ctx context.Context) error {
	r := g.r
	g.marked = make(bitmap, (r.idx.n+63)/64)
	markID := func(id ID) (bool, error) {
		_, pos, ok := r.idx.findPos(id)
		if !ok || pos < 0 {
			return false, fmt.Errorf("blob %s is not in the index", id.Short())
		}
		was := g.marked.get(pos)
		g.marked.set(pos)
		return was, nil
	}
	ids := g.snapIDs
	g.res.Snapshots = len(ids)
	o := r.NewBlobOpener()
	for _, sid := range ids {
		s, err := r.LoadSnapshot(ctx, sid)
		if errors.Is(err, backend.ErrNotFound) {
			g.res.Snapshots--
			continue // forgotten since it was listed
		}
		if err != nil {
			return fmt.Errorf("%w; nothing was deleted (run mover check)", err)
		}
		for i, pid := range s.Pages {
			seen, err := markID(pid)
			if err != nil {
				return fmt.Errorf("snapshot %s page %d: %w; nothing was deleted (run mover repair snapshots)", sid.Short(), i, err)
			}
			if seen {
				continue
			}
			entries, err := r.LoadPage(ctx, o, s, i)
			if err != nil {
				return fmt.Errorf("%w; nothing was deleted", err)
			}
			for _, e := range entries {
				if e.Hole {
					continue
				}
				if _, err := markID(e.ID); err != nil {
					return fmt.Errorf("snapshot %s page %d: chunk %w; nothing was deleted (run mover repair snapshots)", sid.Short(), i, err)
				}
			}
		}
	}
	for _, w := range g.marked {
		g.res.LiveBlobs += bits.OnesCount64(w)
	}
	g.logf("marked %d live blobs in %d snapshots", g.res.LiveBlobs, g.res.Snapshots)
	return nil
}

// account sums, per pack, the bytes of all its blobs and of the live ones
// (a blob counts as live only at its preferred location).
func (g *gc) account(ctx context.Context) error {
	r := g.r
	seen := map[ID]bool{}
	for _, name := range g.indexFiles {
		packs, err := r.readIndexFile(ctx, name)
		if err != nil {
			return err
		}
		for _, p := range packs {
			gp := g.packs[p.ID]
			if gp == nil || seen[p.ID] {
				continue // missing packs are check's to report
			}
			seen[p.ID] = true
			gp.indexed = true
			for _, b := range p.Blobs {
				gp.total += int64(b.Length)
				e, pos, ok := r.idx.findPos(b.ID)
				if ok && pos >= 0 && g.marked.get(pos) && r.idx.packs[e.pack].id == p.ID {
					gp.live += int64(b.Length)
					g.res.LiveBytes += int64(b.Length)
				}
			}
		}
	}
	return nil
}

// classify splits indexed packs into dead ones and ones to repack.
func (g *gc) classify() (dead, repack []ID) {
	for id, p := range g.packs {
		switch {
		case !p.indexed:
		case p.live == 0:
			dead = append(dead, id)
		case float64(p.total-p.live) >= g.opts.RepackThreshold*float64(p.total):
			repack = append(repack, id)
		}
	}
	return dead, repack
}

// deletable returns the dead packs that every gc run has condemned since
// one that ran at least Grace before this run started: a pack that any
// later run found referenced again starts over.
func (g *gc) deletable(dead []ID) []ID {
	if g.opts.Grace <= 0 {
		return dead
	}
	in := make([]map[ID]bool, len(g.states))
	for i, st := range g.states {
		in[i] = make(map[ID]bool, len(st.condemned))
		for _, id := range st.condemned {
			in[i][id] = true
		}
	}
	limit := g.start.Add(-g.opts.Grace)
	var out []ID
	for _, id := range dead {
		// Walk back from the newest state while it lists the pack.
		since := time.Time{}
		for i := len(g.states) - 1; i >= 0 && in[i][id]; i-- {
			since = g.states[i].time
		}
		if !since.IsZero() && !since.After(limit) {
			out = append(out, id)
		}
	}
	return out
}

// unindexedOld returns packs that no index names and that are older than
// the grace period: left by interrupted exports.
func (g *gc) unindexedOld() []ID {
	var out []ID
	for id, p := range g.packs {
		if !p.indexed && !p.modTime.After(g.start.Add(-g.opts.Grace)) {
			out = append(out, id)
		}
	}
	return out
}

// repack copies the live blobs of packs into new packs and makes the copies
// their preferred location. The old packs are then dead.
func (g *gc) repack(ctx context.Context, packs []ID) error {
	r := g.r
	pk := r.NewPacker(0)
	o := r.NewBlobOpener()
	save := func(p *Pack) error {
		if p == nil {
			return nil
		}
		defer r.ReleasePack(p)
		if err := r.SavePack(ctx, p); err != nil {
			return err
		}
		r.idx.relocate(p.ID, p.Key, p.Blobs)
		return nil
	}
	for _, id := range packs {
		data, err := r.ReadPack(ctx, id, 0, -1)
		if err != nil {
			return err
		}
		key, blobs, err := r.readPackHeader(data)
		if err != nil {
			return fmt.Errorf("repacking %s: %w", PackKey(id), err)
		}
		for _, b := range blobs {
			e, pos, ok := r.idx.findPos(b.ID)
			if !ok || pos < 0 || !g.marked.get(pos) || r.idx.packs[e.pack].id != id {
				continue
			}
			ref := BlobRef{Type: b.Type, ID: b.ID, Pack: id, PackKey: key, Offset: b.Offset, Length: b.Length, RawLength: b.RawLength, Compressed: b.Compressed}
			// Verify before copying, so a repack never spreads damage.
			if _, err := o.Open(ref, data[b.Offset:b.Offset+b.Length], nil); err != nil {
				return fmt.Errorf("repacking %s: %w", PackKey(id), err)
			}
			aead, err := newAEAD(key[:])
			if err != nil {
				return err
			}
			payload, err := open(aead, nil, data[b.Offset:b.Offset+b.Length], blobAAD(b.Type, b.ID))
			if err != nil {
				return fmt.Errorf("repacking %s: %w", PackKey(id), err)
			}
			if _, err := pk.addPayload(b.Type, b.ID, payload, b.Compressed, int(b.RawLength)); err != nil {
				return err
			}
			g.res.RepackedBytes += int64(b.Length)
			if pk.Full() {
				p, err := pk.Finish()
				if err != nil {
					return err
				}
				if err := save(p); err != nil {
					return err
				}
			}
		}
		g.res.Repacked++
	}
	p, err := pk.Finish()
	if err != nil {
		return err
	}
	if err := save(p); err != nil {
		return err
	}
	if err := r.Flush(ctx); err != nil {
		return err
	}
	g.logf("repacked %d packs (%d live bytes copied)", g.res.Repacked, g.res.RepackedBytes)
	return nil
}

// saveState records the packs this run found unreferenced.
func (g *gc) saveState(ctx context.Context, dead []ID) error {
	plain, err := json.Marshal(gcState{Version: 1, Condemned: dead})
	if err != nil {
		return err
	}
	data := seal(g.r.aead, nil, plain, []byte(aadGC))
	if err := g.r.put(ctx, gcPrefix+fileID(data).String(), data); err != nil && !errors.Is(err, backend.ErrExists) {
		return fmt.Errorf("writing gc state: %w", err)
	}
	return nil
}

// compact replaces the index files read at the start (and those this run
// wrote while repacking) with fewer files, without the deleted packs.
func (g *gc) compact(ctx context.Context, deleted map[ID]bool) error {
	r := g.r
	var files []string
	if err := r.be.List(ctx, indexPrefix, func(oi backend.ObjectInfo) error {
		files = append(files, oi.Key)
		return nil
	}); err != nil {
		return fmt.Errorf("listing index: %w", err)
	}
	// Only files known to this run are replaced: index files that other
	// writers add meanwhile are left alone.
	known := map[string]bool{}
	for _, f := range g.indexFiles {
		known[f] = true
	}
	written := map[string]bool{}
	for _, f := range r.writtenIndexFiles() {
		known[f] = true
		written[f] = true
	}
	var old []string
	for _, f := range files {
		if known[f] {
			old = append(old, f)
		}
	}
	if len(old) <= 1 && len(deleted) == 0 {
		g.res.IndexFilesLeft = len(files)
		return nil
	}
	seen := map[ID]bool{}
	w := &indexWriter{r: r}
	for _, f := range old {
		packs, err := r.readIndexFile(ctx, f)
		if err != nil {
			return err
		}
		for _, p := range packs {
			if deleted[p.ID] || seen[p.ID] {
				continue
			}
			seen[p.ID] = true
			if err := w.add(ctx, p); err != nil {
				return err
			}
		}
	}
	if err := w.flush(ctx); err != nil {
		return err
	}
	newFiles := w.written
	keep := map[string]bool{}
	for _, f := range newFiles {
		keep[f] = true
	}
	for _, f := range old {
		if keep[f] {
			continue
		}
		if err := r.be.Delete(ctx, f); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("deleting replaced index file %s: %w", f, err)
		}
	}
	g.res.IndexFilesLeft = len(files) - len(old) + len(newFiles)
	g.logf("compacted %d index files into %d", len(old), len(newFiles))
	return nil
}

// pruneStates deletes gc states that a newer state old enough to act on
// makes redundant: every gc run lists all packs unreferenced at that run.
func (g *gc) pruneStates(ctx context.Context) error {
	newestOld := -1
	for i, st := range g.states {
		if !st.time.After(g.start.Add(-g.opts.Grace)) {
			newestOld = i
		}
	}
	for i := 0; i < newestOld; i++ {
		if err := g.r.be.Delete(ctx, g.states[i].key); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("deleting old gc state: %w", err)
		}
	}
	if g.opts.Grace <= 0 {
		// Every state before this run has been acted on.
		for _, st := range g.states {
			if err := g.r.be.Delete(ctx, st.key); err != nil && !errors.Is(err, backend.ErrNotFound) {
				return fmt.Errorf("deleting old gc state: %w", err)
			}
		}
	}
	return nil
}
