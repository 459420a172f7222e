package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
)

// Garbage collection runs beside writers without stopping them, and is
// safe to kill at any instruction. Its safety argument is in FORMAT.md
// ("Garbage collection"); in short: a pack is deleted only if it was
// unreferenced at two gc runs at least the grace period apart, writers
// never deduplicate against a pack that a gc run has condemned, a pack is
// deleted only after no index file names it, and every time is the
// backend's.

const (
	gcPrefix = "gc/"
	aadGC    = "blockmover gc state v1"
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
	// that first finds a pack unreferenced and the run that deletes it;
	// packs younger than Grace are never condemned (an interrupted
	// export's rerun reuses them). Zero deletes unreferenced packs at
	// once: only safe when no export or import runs at the same time.
	Grace time.Duration
	// RepackThreshold: a pack whose unreferenced bytes are at least this
	// fraction of it has its live blobs copied to new packs, and is then
	// condemned (default 0.1; must be in (0, 1]).
	RepackThreshold float64
	// StaleLease: see LeaseOptions.Stale.
	StaleLease time.Duration
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
	Young          int   `json:"young"`           // packs younger than the grace period, kept whole
	Condemned      int   `json:"condemned"`       // packs unreferenced now
	Deleted        int   `json:"deleted"`         // packs deleted by this run
	DeletedBytes   int64 `json:"deleted_bytes"`   // their size
	Repacked       int   `json:"repacked"`        // packs whose live blobs were copied
	RepackedBytes  int64 `json:"repacked_bytes"`  // live bytes copied
	Waiting        int   `json:"waiting"`         // condemned packs still in their grace period
	MissingPacks   int   `json:"missing_packs"`   // packs the index named that do not exist (their entries are dropped)
	IndexFiles     int   `json:"index_files"`     // index files read
	IndexFilesLeft int   `json:"index_files_now"` // after compaction
	TempFiles      int   `json:"temp_files"`      // stale temporary files deleted (fs)
	TempBytes      int64 `json:"temp_bytes"`      // their size

	// The compaction's index files: those it rewrote (and then deleted),
	// and those it wrote in their place.
	IndexFilesRewritten int `json:"index_files_rewritten"`
	IndexFilesWritten   int `json:"index_files_written"`
}

// minTempAge is the least age of a temporary file gc deletes, whatever
// the grace period: a write in progress never leaves its file that long.
const minTempAge = time.Hour

// deleteBatch is how many objects gc deletes between two checks that it
// still holds the lease.
const deleteBatch = 32

type gcPack struct {
	size, total, live int64
	modTime           time.Time
	indexed           bool
}

// GC marks every blob reachable from every snapshot, repacks packs that
// are mostly garbage, condemns unreferenced packs, deletes the packs that
// were condemned at least Grace ago (and unindexed packs older than
// Grace, left by interrupted exports or killed gc runs), compacts the
// index files, and on a backend.TempCleaner deletes the temporary files
// that interrupted writes left (those older than Grace, and at least an
// hour). It holds the maintenance lease while it runs (see AcquireLease).
//
// GC deletes nothing while any index file or snapshot is unreadable, or a
// snapshot needs a blob that no existing pack holds: it says which and
// what to repair. Killed at any point, it leaves a valid repository, and
// the next run finishes the work.
//
// Memory: one bit per indexed blob for the mark, plus the index itself;
// pages and index files are streamed.
func (r *Repository) GC(ctx context.Context, opts GCOptions) (*GCResult, error) {
	switch t := opts.RepackThreshold; {
	case t == 0:
		opts.RepackThreshold = 0.1
	case math.IsNaN(t) || t < 0 || t > 1:
		return nil, fmt.Errorf("gc: repack threshold %g: want a fraction above 0 and at most 1", t)
	}
	if opts.Grace < 0 {
		return nil, fmt.Errorf("gc: negative grace period %v", opts.Grace)
	}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			opts.Log(fmt.Sprintf(format, args...))
		}
	}
	g := &gc{r: r, opts: opts, logf: logf, res: &GCResult{}}
	if opts.DryRun {
		now, err := storageNow(ctx, r.be)
		if err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
		g.start = now
	} else {
		lease, err := r.AcquireLease(ctx, LeaseOptions{Stale: opts.StaleLease, Purpose: "gc"})
		if err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
		defer lease.Release(ctx)
		g.lease, g.start = lease, lease.Start()
	}
	if err := g.run(ctx); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	return g.res, nil
}

type gc struct {
	r     *Repository
	opts  GCOptions
	logf  func(string, ...any)
	lease *Lease    // nil in a dry run
	start time.Time // the lease's time: this run's start by the backend's clock
	res   *GCResult

	snapIDs    []ID            // listed at the start, before the index
	indexFiles []indexFileInfo // read at the start, in name order
	packs      map[ID]*gcPack  // listed at the start
	newPacks   map[ID]bool     // written by this run's repack
	missing    map[ID]int      // named by the index, not in the listing
	marked     bitmap          // by index position
	states     []gcStateInfo   // earlier runs, oldest first
}

type indexFileInfo struct {
	name  string
	blobs int
	packs []ID
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
	// Snapshots first, then packs, then the index: an export writes its
	// packs, then its index files, then its snapshot, so every snapshot
	// listed here has its chunks in index files listed below, in packs
	// that exist unless damage removed them. (Snapshots written later are
	// protected by the grace period, see FORMAT.md.)
	if g.lease != nil {
		// Summaries for the snapshots that have none, and none for
		// snapshots that are gone (FORMAT.md, "Snapshot summaries").
		if _, err := r.MigrateSummaries(ctx); err != nil {
			return err
		}
	}
	var err error
	if g.snapIDs, err = r.SnapshotIDs(ctx); err != nil {
		return err
	}
	packs, err := r.listPacks(ctx)
	if err != nil {
		return err
	}
	if err := g.loadStates(ctx); err != nil {
		return err
	}
	var condemned []ID
	if n := len(g.states); n > 0 {
		condemned = g.states[n-1].condemned
	}
	load, err := r.loadIndexFiles(ctx, packs, condemned, nil, nil)
	if err != nil {
		return err
	}
	if len(load.damaged) > 0 {
		return fmt.Errorf("%w: %s (%s); gc deletes nothing while an index file is unreadable", ErrIndexDamaged, load.damaged[0].Object, load.damaged[0].Err)
	}
	g.missing = load.missing
	g.res.MissingPacks = len(load.missing)
	if len(load.missing) > 0 {
		g.logf("the index names %d packs that do not exist: their entries are dropped", len(load.missing))
	}
	g.res.IndexFiles = len(load.files)
	g.packs = make(map[ID]*gcPack, len(packs))
	for id, m := range packs {
		g.packs[id] = &gcPack{size: m.size, modTime: m.mod}
	}
	g.res.Packs = len(g.packs)
	if err := g.mark(ctx); err != nil {
		return err
	}
	if err := g.account(ctx, load.files); err != nil {
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
	slices.SortFunc(dead, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	g.res.Condemned = len(dead)
	deletable := g.deletable(dead)
	g.res.Waiting = len(dead) - len(deletable)
	deletable = append(deletable, g.unindexedOld()...)
	if g.opts.DryRun {
		g.res.Deleted = len(deletable)
		for _, id := range deletable {
			g.res.DeletedBytes += g.packs[id].size
		}
		return nil
	}
	// The order that keeps every index entry pointing at a pack that
	// exists (FORMAT.md): condemn, write the index without the packs to
	// delete, delete the index files it replaces, and only then the packs.
	if err := g.saveState(ctx, dead); err != nil {
		return err
	}
	drop := make(map[ID]bool, len(deletable))
	for _, id := range deletable {
		drop[id] = true
	}
	if err := g.compact(ctx, drop); err != nil {
		return err
	}
	if err := g.deletePacks(ctx, deletable); err != nil {
		return err
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
	return errors.Join(g.removeStaleClaims(ctx), g.pruneStates(ctx))
}

// deleteKeys deletes objects in batches, checking before each batch that
// this run still holds the lease.
func (g *gc) deleteKeys(ctx context.Context, keys []string, done func(i int)) error {
	for i, k := range keys {
		if i%deleteBatch == 0 {
			if err := g.lease.Check(ctx); err != nil {
				return err
			}
		}
		if err := g.r.be.Delete(ctx, k); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("deleting %s: %w", k, err)
		}
		if done != nil {
			done(i)
		}
	}
	return nil
}

// deletePacks deletes packs that no index file names any more.
func (g *gc) deletePacks(ctx context.Context, ids []ID) error {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = PackKey(id)
	}
	return g.deleteKeys(ctx, keys, func(i int) {
		g.res.Deleted++
		g.res.DeletedBytes += g.packs[ids[i]].size
	})
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
	slices.SortFunc(g.states, func(a, b gcStateInfo) int {
		if c := a.time.Compare(b.time); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
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

// mark sets a bit for every blob reachable from a snapshot: pages and the
// chunks they list. A blob that no existing pack holds stops gc.
func (g *gc) mark(ctx context.Context) error {
	r := g.r
	g.marked = make(bitmap, (r.idx.positions()+63)/64)
	markID := func(id ID) (bool, error) {
		pos, _, ok := r.idx.locate(id)
		if !ok {
			return false, &BlobError{ID: id, Err: fmt.Errorf("%w: in no existing pack", ErrBlobMissing)}
		}
		if pos < 0 {
			return false, fmt.Errorf("blob %s: the index changed during the mark", id.Short())
		}
		was := g.marked.get(pos)
		g.marked.set(pos)
		return was, nil
	}
	g.res.Snapshots = len(g.snapIDs)
	err := r.eachSnapshot(ctx, g.snapIDs, snapshotCheckers, func(sid ID, s *Snapshot, err error) error {
		if errors.Is(err, backend.ErrNotFound) {
			g.res.Snapshots--
			return nil // forgotten since it was listed
		}
		if err != nil {
			return fmt.Errorf("%w; gc deletes nothing while a snapshot is unreadable: forget snapshot %s if it is not needed", err, sid.Short())
		}
		var unseen []int
		for i, pid := range s.Pages {
			seen, err := markID(pid)
			if err != nil {
				return fmt.Errorf("snapshot %s page %d: %w; nothing was deleted", sid.Short(), i, err)
			}
			if !seen {
				unseen = append(unseen, i)
			}
		}
		// The pages are read in parallel, marked here.
		var markErr error
		err = r.eachPages(ctx, s, unseen, snapshotCheckers, func(i int, entries []Entry, err error) error {
			if err != nil {
				return err
			}
			for _, e := range entries {
				if e.Hole {
					continue
				}
				if _, err := markID(e.ID); err != nil {
					markErr = fmt.Errorf("snapshot %s page %d: chunk %w; nothing was deleted", sid.Short(), i, err)
					return markErr
				}
			}
			return nil
		})
		if err != nil && err != markErr {
			return fmt.Errorf("%w; nothing was deleted", err)
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, w := range g.marked {
		g.res.LiveBlobs += bits.OnesCount64(w)
	}
	g.logf("marked %d live blobs in %d snapshots", g.res.LiveBlobs, g.res.Snapshots)
	return nil
}

// live reports whether blob id is marked and its preferred copy is in
// pack.
func (g *gc) live(id, pack ID) bool {
	pos, at, ok := g.r.idx.locate(id)
	return ok && pos >= 0 && g.marked.get(pos) && at == pack
}

// account sums, per pack, the bytes of all its blobs and of the live ones
// (a blob counts as live only at its preferred location), and notes which
// packs each index file names, for the compaction.
func (g *gc) account(ctx context.Context, files []string) error {
	r := g.r
	seen := map[ID]bool{}
	for _, name := range files {
		recs, err := r.readIndexFile(ctx, name)
		if err != nil {
			return err
		}
		for _, p := range recs {
			gp := g.packs[p.ID]
			if gp == nil || seen[p.ID] {
				continue // missing, or counted already
			}
			seen[p.ID] = true
			gp.indexed = true
			for _, b := range p.Blobs {
				gp.total += int64(b.Length)
			}
		}
		g.indexFiles = append(g.indexFiles, fileInfoOf(name, recs))
	}
	g.sumLive()
	return nil
}

// sumLive adds each marked blob's length to the live bytes of the pack of
// its preferred copy, the position the mark set: one pass over the set
// bits, where a lookup of every indexed blob (a binary search each) cost
// gc most of its CPU in a large repository.
func (g *gc) sumLive() {
	x := g.r.idx
	x.mu.RLock()
	defer x.mu.RUnlock()
	for w, word := range g.marked {
		for ; word != 0; word &= word - 1 {
			e := x.at(w<<6 | bits.TrailingZeros64(word))
			if gp := g.packs[x.packs[e.pack].id]; gp != nil && gp.indexed {
				gp.live += int64(e.len)
				g.res.LiveBytes += int64(e.len)
			}
		}
	}
}

// young reports whether a pack is younger than the grace period: it may
// belong to an export that has not written its snapshot yet, or to an
// interrupted one whose rerun will reuse it, so gc neither condemns nor
// repacks it.
func (g *gc) young(p *gcPack) bool {
	return p.modTime.After(g.start.Add(-g.opts.Grace))
}

// classify splits indexed packs into dead ones and ones to repack.
func (g *gc) classify() (dead, repack []ID) {
	for id, p := range g.packs {
		switch {
		case !p.indexed:
		case g.young(p):
			g.res.Young++
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
		return slices.Clone(dead)
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
// the grace period: left by interrupted exports, or by a gc killed after
// it rewrote the index and before it deleted them.
func (g *gc) unindexedOld() []ID {
	var out []ID
	for id, p := range g.packs {
		if !p.indexed && !g.young(p) {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// repack copies the live blobs of packs into new packs, indexes them, and
// makes the copies their preferred location. The old packs are then dead.
func (g *gc) repack(ctx context.Context, packs []ID) error {
	r := g.r
	pk := r.NewPacker(0)
	o := r.NewBlobOpener()
	g.newPacks = map[ID]bool{}
	save := func(p *Pack) error {
		if p == nil {
			return nil
		}
		defer r.ReleasePack(p)
		g.newPacks[p.ID] = true
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
			if !g.live(b.ID, id) {
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

// compact rewrites the index files that planCompaction picks (those that
// name a pack to drop: one to delete now, or one that does not exist; the
// small ones; duplicates) into fewer files without the packs to drop and
// those the files it keeps name; then it deletes the files it replaced. Every pack that stays is in a
// durable index file before any file naming it is deleted. Index files
// that other writers added meanwhile are left alone; those this run wrote
// while repacking are merged.
func (g *gc) compact(ctx context.Context, drop map[ID]bool) error {
	r := g.r
	keepPack := func(id ID) bool {
		return g.newPacks[id] || g.packs[id] != nil && !drop[id]
	}
	files := slices.Clone(g.indexFiles)
	for _, name := range r.writtenIndexFiles() {
		recs, err := r.readIndexFile(ctx, name)
		if err != nil {
			return err
		}
		files = append(files, fileInfoOf(name, recs))
	}
	replace, kept := planCompaction(files, keepPack)
	g.res.IndexFilesLeft = len(files) - len(replace)
	if len(replace) == 0 {
		return nil
	}
	w := &indexWriter{r: r}
	for _, f := range replace {
		recs, err := r.readIndexFile(ctx, f.name)
		if err != nil {
			return err
		}
		for _, p := range recs {
			if !keepPack(p.ID) || kept[p.ID] {
				continue
			}
			kept[p.ID] = true
			if err := w.add(ctx, p); err != nil {
				return err
			}
		}
	}
	if err := w.flush(ctx); err != nil {
		return err
	}
	written := map[string]bool{}
	for _, k := range w.written {
		written[k] = true
	}
	var old []string
	for _, f := range replace {
		if !written[f.name] {
			old = append(old, f.name)
		}
	}
	if err := g.deleteKeys(ctx, old, nil); err != nil {
		return fmt.Errorf("deleting replaced index files: %w", err)
	}
	g.res.IndexFilesLeft += len(w.written)
	g.res.IndexFilesRewritten, g.res.IndexFilesWritten = len(replace), len(w.written)
	g.logf("rewrote %d index files into %d", len(replace), len(w.written))
	return nil
}

func fileInfoOf(name string, recs []indexPack) indexFileInfo {
	info := indexFileInfo{name: name}
	for _, p := range recs {
		info.packs = append(info.packs, p.ID)
		info.blobs += len(p.Blobs)
	}
	return info
}

// planCompaction picks the index files to rewrite: those that name a pack
// not to keep; the small ones (under half of compactBlobs entries) when
// there are two or more, to merge them; and, of the other files from the
// largest down (by entries, then in order), those that name a pack that a
// file decided before and kept names too (or that name one pack twice).
// Every other file is left as it is, byte for byte: the rewrite is linear
// in the files whose packs changed and the small ones, not in the index.
// A pack that a kept file and a rewritten one both name stays in the kept
// file, and a pack that a large file and a small one both name stays in
// the large one; so a gc killed after it wrote merged files and before it
// deleted the files they replace makes the next run delete those, not
// rewrite the merged ones, however the leftovers sort. It returns the
// files to rewrite, in the order given, and the packs the kept files name,
// which the rewrite leaves out.
func planCompaction(files []indexFileInfo, keepPack func(ID) bool) (replace []indexFileInfo, kept map[ID]bool) {
	small := 0
	for _, f := range files {
		if f.blobs < compactBlobs/2 {
			small++
		}
	}
	must := func(f indexFileInfo) bool {
		if small > 1 && f.blobs < compactBlobs/2 {
			return true
		}
		return slices.ContainsFunc(f.packs, func(id ID) bool { return !keepPack(id) })
	}
	// Larger files decide first, so a pack that a small file shares with
	// a large one stays in the large one, wherever the small file sorts.
	order := make([]int, len(files))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return files[b].blobs - files[a].blobs })
	kept = map[ID]bool{}
	rewrite := make([]bool, len(files))
	for _, i := range order {
		f := files[i]
		rewrite[i] = must(f)
		if !rewrite[i] {
			mine := make(map[ID]bool, len(f.packs))
			for _, id := range f.packs {
				if kept[id] || mine[id] {
					rewrite[i] = true
					break
				}
				mine[id] = true
			}
		}
		if rewrite[i] {
			continue
		}
		for _, id := range f.packs {
			kept[id] = true
		}
	}
	for i, f := range files {
		if rewrite[i] {
			replace = append(replace, f)
		}
	}
	return replace, kept
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
	if g.opts.Grace <= 0 {
		newestOld = len(g.states) // every state before this run has been acted on
	}
	var keys []string
	for i := 0; i < newestOld && i < len(g.states); i++ {
		keys = append(keys, g.states[i].key)
	}
	if err := g.deleteKeys(ctx, keys, nil); err != nil {
		return fmt.Errorf("deleting old gc states: %w", err)
	}
	return nil
}
