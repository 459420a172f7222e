package repo

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo/backend"
)

// CheckOptions choose how deep Check looks.
type CheckOptions struct {
	// ReadData downloads every pack, decrypts every blob and verifies it
	// against its ID.
	ReadData bool
	// Workers bounds parallel downloads (default 4).
	Workers int
	// Progress, if set, is called after each pack is read with ReadData.
	// It may be called from several goroutines at once.
	Progress func(packsDone, packsTotal int)
}

// Problem is one defect Check found, naming the damaged object.
type Problem struct {
	Object string `json:"object"` // backend key, or snapshot/blob name
	Err    string `json:"error"`
	// Warning problems do not make the check fail (e.g. a pack that no index
	// names yet, left by an interrupted export).
	Warning bool `json:"warning,omitempty"`
}

func (p Problem) String() string { return p.Object + ": " + p.Err }

// CheckResult is what Check found.
type CheckResult struct {
	Packs     int       `json:"packs"`
	Blobs     int       `json:"blobs"`
	Snapshots int       `json:"snapshots"`
	ReadBytes int64     `json:"read_bytes"`
	Problems  []Problem `json:"problems,omitempty"`
}

// OK reports whether the check found no errors (warnings allowed).
func (c *CheckResult) OK() bool {
	for _, p := range c.Problems {
		if !p.Warning {
			return false
		}
	}
	return true
}

// Errors returns the non-warning problems.
func (c *CheckResult) Errors() []Problem {
	var out []Problem
	for _, p := range c.Problems {
		if !p.Warning {
			out = append(out, p)
		}
	}
	return out
}

type checker struct {
	r   *Repository
	mu  sync.Mutex
	res CheckResult
}

func (c *checker) problem(obj string, warn bool, format string, args ...any) {
	c.mu.Lock()
	c.res.Problems = append(c.res.Problems, Problem{Object: obj, Err: fmt.Sprintf(format, args...), Warning: warn})
	c.mu.Unlock()
}

// Check verifies the repository's structure: key files parse, every index
// file authenticates, every index entry points into an existing pack,
// every snapshot and its pages load, and every chunk they name is indexed.
// With ReadData it also reads every pack and verifies every blob. Damage is
// reported in the result (naming the object), not as an error; the error
// is for failures that stop the check itself (backend unreachable).
//
// Check rebuilds the in-memory index from the index files it can read, so
// open the repository with Options.NoIndex to check one whose index is
// damaged.
func (r *Repository) Check(ctx context.Context, opts CheckOptions) (*CheckResult, error) {
	c := &checker{r: r}
	if err := c.keys(ctx); err != nil {
		return nil, err
	}
	packSizes := map[ID]int64{}
	err := r.be.List(ctx, dataPrefix, func(oi backend.ObjectInfo) error {
		name := oi.Key[strings.LastIndexByte(oi.Key, '/')+1:]
		id, err := ParseID(name)
		if err != nil || PackKey(id) != oi.Key {
			c.problem(oi.Key, true, "not a pack file name")
			return nil
		}
		packSizes[id] = oi.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing packs: %w", err)
	}
	c.res.Packs = len(packSizes)
	indexed, err := c.index(ctx, packSizes)
	if err != nil {
		return nil, err
	}
	for id := range packSizes {
		if _, ok := indexed[id]; !ok {
			c.problem(PackKey(id), true, "pack is not in any index (left by an interrupted export; gc removes it after the grace period, repair index adds it)")
		}
	}
	if err := c.snapshots(ctx); err != nil {
		return nil, err
	}
	if opts.ReadData {
		if err := c.readData(ctx, packSizes, indexed, opts); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(c.res.Problems, func(a, b Problem) int { return strings.Compare(a.Object, b.Object) })
	return &c.res, nil
}

func (c *checker) keys(ctx context.Context) error {
	return c.r.be.List(ctx, keysPrefix, func(oi backend.ObjectInfo) error {
		b, err := backend.ReadAll(ctx, c.r.be, oi.Key, 0, -1)
		if err != nil {
			c.problem(oi.Key, false, "%v", err)
			return nil
		}
		if fileID(b).String() != strings.TrimPrefix(oi.Key, keysPrefix) {
			c.problem(oi.Key, false, "%v (another key file opens the repository; removing this one loses nothing)", ErrKeyFileDamaged)
			return nil
		}
		if _, err := parseKeyFile(b); err != nil {
			c.problem(oi.Key, false, "%v", err)
		}
		return nil
	})
}

// index reads every index file, checks each entry against the pack
// listing, and (re)builds the in-memory index. It returns the blobs each
// indexed pack should hold.
func (c *checker) index(ctx context.Context, packSizes map[ID]int64) (map[ID]indexPack, error) {
	var names []string
	if err := c.r.be.List(ctx, indexPrefix, func(oi backend.ObjectInfo) error {
		names = append(names, oi.Key)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing index: %w", err)
	}
	c.r.idx = newIndex()
	indexed := map[ID]indexPack{}
	for _, name := range names {
		packs, err := c.r.readIndexFile(ctx, name)
		if err != nil {
			c.problem(name, false, "%v", strings.TrimPrefix(err.Error(), "index file "+name+": "))
			continue
		}
		for _, p := range packs {
			size, ok := packSizes[p.ID]
			if !ok {
				c.problem(PackKey(p.ID), false, "pack named by %s is missing (repairing the index drops its entries)", name)
				continue
			}
			for _, b := range p.Blobs {
				if int64(b.Offset)+int64(b.Length) > size-packTrailer {
					c.problem(PackKey(p.ID), false, "blob %s at %d+%d lies beyond the pack's %d bytes (index %s)", b.ID.Short(), b.Offset, b.Length, size, name)
				}
			}
			c.r.idx.add(p.ID, p.Key, time.Time{}, p.Blobs)
			if _, dup := indexed[p.ID]; !dup {
				indexed[p.ID] = p
			}
		}
	}
	c.r.idx.finish()
	c.res.Blobs = c.r.idx.Len()
	return indexed, nil
}

// snapshotCheckers bounds the snapshots check and gc read at once, and
// pageCheckers the pages check reads at once for each of them.
const (
	snapshotCheckers = 8
	pageCheckers     = 4
)

// snapshots checks every snapshot file, its pages and its summary, reading
// snapshotCheckers snapshots at once.
func (c *checker) snapshots(ctx context.Context) error {
	sums, err := c.r.listSummaries(ctx) // first: see ReadSummaries
	if err != nil {
		return err
	}
	files, err := c.r.listSnapshotFiles(ctx)
	if err != nil {
		return err
	}
	c.res.Snapshots = len(files)
	for id := range sums {
		if _, ok := files[id]; !ok {
			c.problem(summaryKey(id), true, "summary of a snapshot that is gone (left by a forget that was stopped, or by an older mover's; the next write removes it)")
		}
	}
	ids := make(chan ID)
	seen := &seenPages{m: map[ID]bool{}}
	g, gctx := safego.WithContext(ctx)
	for range snapshotCheckers {
		g.Go(func() error {
			for id := range ids {
				s := c.snapshot(gctx, id, seen)
				if sums[id] {
					c.summary(gctx, id, files[id], s)
				} else {
					c.problem(summaryKey(id), true, "missing: the snapshot is listed from its file until the next write adds its summary")
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(ids)
		for id := range files {
			select {
			case ids <- id:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}

// seenPages are the pages checked, or being checked, by any snapshot.
type seenPages struct {
	mu sync.Mutex
	m  map[ID]bool
}

// snapshot checks snapshot id and the pages no other snapshot has had
// checked, and returns it (nil if it is unreadable).
func (c *checker) snapshot(ctx context.Context, id ID, seen *seenPages) *Snapshot {
	obj := snapshotPrefix + id.String()
	s, err := c.r.LoadSnapshot(ctx, id)
	if err != nil {
		c.problem(obj, false, "%v", err)
		return nil
	}
	missing := 0
	var unseen []int
	seen.mu.Lock()
	for i, pid := range s.Pages {
		if !seen.m[pid] {
			seen.m[pid] = true
			unseen = append(unseen, i)
		}
	}
	seen.mu.Unlock()
	// A page that does not load is reported, and the others still read.
	err = c.r.eachPages(ctx, s, unseen, pageCheckers, func(i int, entries []Entry, err error) error {
		if err != nil {
			seen.mu.Lock()
			delete(seen.m, s.Pages[i]) // the other snapshots naming it report it too
			seen.mu.Unlock()
			c.problem(obj, false, "%v", err)
			return nil
		}
		for _, e := range entries {
			if !e.Hole && !c.r.idx.Has(e.ID) {
				if missing < 5 {
					c.problem(obj, false, "page %d: chunk %s is not in the index", i, e.ID.Short())
				}
				missing++
			}
		}
		return nil
	})
	if err != nil {
		c.problem(obj, false, "%v", err)
	}
	if missing > 5 {
		c.problem(obj, false, "%d more chunks are not in the index", missing-5)
	}
	return s
}

// summary checks the summary of snapshot id against the snapshot (nil if
// its file is unreadable), whose file is fileSize bytes.
func (c *checker) summary(ctx context.Context, id ID, fileSize int64, s *Snapshot) {
	obj := summaryKey(id)
	sum, err := c.r.readSummary(ctx, id, fileSize)
	switch {
	case err != nil && isDamage(err):
		c.problem(obj, false, "%v; listings read the snapshot file instead (mover repair snapshots rewrites the summary)", err)
	case err != nil:
		c.problem(obj, false, "%v", err)
	case s != nil && !sameSummary(sum, s):
		c.problem(obj, false, "%v: it does not describe the snapshot (mover repair snapshots rewrites it)", errSummaryMismatch)
	}
}

func (c *checker) readData(ctx context.Context, packSizes map[ID]int64, indexed map[ID]indexPack, opts CheckOptions) error {
	ids := make([]ID, 0, len(packSizes))
	for id := range packSizes {
		ids = append(ids, id)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = 4
	}
	g, gctx := safego.WithContext(ctx)
	g.SetLimit(workers)
	var done int
	for _, id := range ids {
		g.Go(func() error {
			c.readPack(gctx, id, indexed)
			c.mu.Lock()
			done++
			d := done
			c.mu.Unlock()
			if opts.Progress != nil {
				opts.Progress(d, len(ids))
			}
			return gctx.Err()
		})
	}
	return g.Wait()
}

func (c *checker) readPack(ctx context.Context, id ID, indexed map[ID]indexPack) {
	key := PackKey(id)
	data, err := backend.ReadAll(ctx, c.r.be, key, 0, -1)
	if err != nil {
		if ctx.Err() == nil {
			c.problem(key, false, "%v", err)
		}
		return
	}
	c.mu.Lock()
	c.res.ReadBytes += int64(len(data))
	c.mu.Unlock()
	pkey, blobs, err := c.r.readPackHeader(data)
	if err != nil {
		c.problem(key, false, "%v", err)
		return
	}
	if ip, ok := indexed[id]; ok {
		if ip.Key != pkey || len(ip.Blobs) != len(blobs) {
			c.problem(key, false, "pack header does not match its index entry")
		} else {
			for i := range blobs {
				if blobs[i] != ip.Blobs[i] {
					c.problem(key, false, "pack header does not match its index entry at blob %d", i)
					break
				}
			}
		}
	}
	o := c.r.NewBlobOpener()
	var buf []byte
	for _, b := range blobs {
		ref := BlobRef{Type: b.Type, ID: b.ID, Pack: id, PackKey: pkey, Offset: b.Offset, Length: b.Length, RawLength: b.RawLength, Compressed: b.Compressed}
		buf, err = o.Open(ref, data[b.Offset:b.Offset+b.Length], buf[:0])
		if err != nil {
			c.problem(key, false, "%v", err)
		}
	}
}
