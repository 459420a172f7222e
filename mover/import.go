package mover

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockmover/blockmover/repo"
	"golang.org/x/sync/errgroup"
)

// Target is a volume to import onto. WriteAt may be called from several
// goroutines on ranges that do not overlap (the io.WriterAt contract) and
// must not retain p.
type Target interface {
	io.WriterAt
	Size() int64
	// Zero makes a range read as zeros (punching holes where it can).
	Zero(off, n int64) error
	// Sync makes everything written durable.
	Sync() error
}

// ImportOptions tune an import.
type ImportOptions struct {
	// Downloads is the number of parallel fetch, decrypt and write workers
	// (default 2·GOMAXPROCS, at least 4).
	Downloads int
	// TargetZeroed promises that the target reads as zeros already, so
	// holes are not written. A Target with a method Fresh() bool that
	// returns true (a new or empty file) is taken as zeroed too.
	TargetZeroed bool
	// Window is how many volume bytes are planned at once (default 1 GiB);
	// it bounds the plan's memory.
	Window int64
	// MaxGap: blobs of one pack at most this far apart are fetched in one
	// ranged read (default 1 MiB). MaxRange bounds one read (default
	// 16 MiB) and so each worker's buffer.
	MaxGap, MaxRange int64
	// Progress, if set, is called about every ProgressInterval and once at
	// the end, from one goroutine.
	Progress         func(Progress)
	ProgressInterval time.Duration
}

// ImportResult describes a finished import.
type ImportResult struct {
	Snapshot *repo.Snapshot
	Size     int64
	// WrittenBytes of chunk data were written; ZeroedBytes were made zero
	// (or skipped on a zeroed target); FetchedBytes were read from the
	// backend.
	WrittenBytes, ZeroedBytes, FetchedBytes int64
	Chunks                                  int64
	Duration                                time.Duration
	Stages                                  Stages
}

// fetch is one ranged read of a pack and the blobs it carries.
type fetch struct {
	pack  repo.ID
	off   int64
	n     int64
	blobs []*want
}

// want is one blob and every target offset it is written to.
type want struct {
	ref  repo.BlobRef
	offs []int64
}

type zeroRun struct{ off, n int64 }

type importer struct {
	st    Store
	snap  *repo.Snapshot
	dst   Target
	opts  ImportOptions
	start time.Time

	written, zeroed, fetched, chunks atomic.Int64

	mu     sync.Mutex
	stages Stages
}

// Import writes snapshot snap from st onto dst and syncs it. Every chunk is
// verified against its ID before it is written; holes are zeroed (punched
// in files, BLKZEROOUT on devices) unless the target is known to be zeroed.
// Chunks are fetched with ranged reads, pack by pack, by parallel workers;
// memory is bounded by the options, not by the snapshot's size. The target
// must hold at least snap.Size bytes.
func Import(ctx context.Context, st Store, snap *repo.Snapshot, dst Target, opts ImportOptions) (*ImportResult, error) {
	if dst.Size() < snap.Size {
		return nil, fmt.Errorf("import: target holds %d bytes, snapshot %s needs %d", dst.Size(), snap.ID.Short(), snap.Size)
	}
	im := &importer{st: st, snap: snap, dst: dst, opts: opts, start: time.Now()}
	o := &im.opts
	if o.Downloads <= 0 {
		o.Downloads = max(4, 2*runtimeWorkers())
	}
	if o.Window <= 0 {
		o.Window = 1 << 30
	}
	if o.MaxGap <= 0 {
		o.MaxGap = 1 << 20
	}
	if o.MaxRange <= 0 {
		o.MaxRange = 16 << 20
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = time.Second
	}
	if f, ok := dst.(interface{ Fresh() bool }); ok && f.Fresh() {
		o.TargetZeroed = true
	}
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan any, o.Downloads)
	g.Go(func() error {
		defer close(jobs)
		return im.plan(gctx, jobs)
	})
	for range o.Downloads {
		g.Go(func() error { return im.work(gctx, jobs) })
	}
	stop := runProgress(ctx, o.Progress, o.ProgressInterval, im.current)
	err := g.Wait()
	if err == nil {
		t := time.Now()
		err = dst.Sync()
		im.stages.Write += time.Since(t)
	}
	stop()
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	return &ImportResult{
		Snapshot: snap, Size: snap.Size,
		WrittenBytes: im.written.Load(), ZeroedBytes: im.zeroed.Load(), FetchedBytes: im.fetched.Load(),
		Chunks: im.chunks.Load(), Duration: time.Since(im.start), Stages: im.stages,
	}, nil
}

func (im *importer) current() Progress {
	return Progress{
		Size: im.snap.Size, DoneBytes: im.written.Load() + im.zeroed.Load(),
		ReadBytes: im.fetched.Load(), WrittenBytes: im.written.Load(), Elapsed: time.Since(im.start),
	}
}

// plan reads the snapshot's pages a window at a time and sends fetch and
// zero jobs.
func (im *importer) plan(ctx context.Context, jobs chan<- any) error {
	o := im.st.NewBlobOpener()
	send := func(j any) error {
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	pagesPerWindow := max(1, int(im.opts.Window/im.snap.SegmentSize))
	for first := 0; first < len(im.snap.Pages); first += pagesPerWindow {
		byID := map[repo.ID]*want{}
		var zeros []zeroRun
		for i := first; i < min(first+pagesPerWindow, len(im.snap.Pages)); i++ {
			entries, err := im.st.LoadPage(ctx, o, im.snap, i)
			if err != nil {
				return err
			}
			off, _ := im.snap.PageRange(i)
			for _, e := range entries {
				if e.Hole {
					if n := len(zeros); n > 0 && zeros[n-1].off+zeros[n-1].n == off {
						zeros[n-1].n += e.Length
					} else {
						zeros = append(zeros, zeroRun{off, e.Length})
					}
				} else {
					w := byID[e.ID]
					if w == nil {
						ref, ok := im.st.Lookup(e.ID)
						if !ok {
							return fmt.Errorf("snapshot %s needs chunk %s at offset %d, which is not in the repository (run mover check)", im.snap.ID.Short(), e.ID.Short(), off)
						}
						if int64(ref.RawLength) != e.Length {
							return fmt.Errorf("snapshot %s: chunk %s at offset %d is %d bytes in the index, %d in the snapshot", im.snap.ID.Short(), e.ID.Short(), off, ref.RawLength, e.Length)
						}
						w = &want{ref: ref}
						byID[e.ID] = w
					}
					w.offs = append(w.offs, off)
				}
				off += e.Length
			}
		}
		for _, z := range zeros {
			if err := send(z); err != nil {
				return err
			}
		}
		for _, f := range im.coalesce(byID) {
			if err := send(f); err != nil {
				return err
			}
		}
	}
	return nil
}

// coalesce groups wanted blobs into ranged reads, pack by pack.
func (im *importer) coalesce(byID map[repo.ID]*want) []*fetch {
	byPack := map[repo.ID][]*want{}
	for _, w := range byID {
		byPack[w.ref.Pack] = append(byPack[w.ref.Pack], w)
	}
	var out []*fetch
	for pack, ws := range byPack {
		slices.SortFunc(ws, func(a, b *want) int { return cmp.Compare(a.ref.Offset, b.ref.Offset) })
		var cur *fetch
		for _, w := range ws {
			off, end := int64(w.ref.Offset), int64(w.ref.Offset)+int64(w.ref.Length)
			if cur != nil && off-(cur.off+cur.n) <= im.opts.MaxGap && end-cur.off <= im.opts.MaxRange {
				cur.n = end - cur.off
				cur.blobs = append(cur.blobs, w)
				continue
			}
			cur = &fetch{pack: pack, off: off, n: end - off, blobs: []*want{w}}
			out = append(out, cur)
		}
	}
	// Fetch in target order, so writes move forward through the device.
	slices.SortFunc(out, func(a, b *fetch) int { return cmp.Compare(a.blobs[0].offs[0], b.blobs[0].offs[0]) })
	return out
}

func (im *importer) work(ctx context.Context, jobs <-chan any) error {
	o := im.st.NewBlobOpener()
	var buf []byte
	var st Stages
	defer func() {
		im.mu.Lock()
		im.stages.Download += st.Download
		im.stages.Decode += st.Decode
		im.stages.Write += st.Write
		im.mu.Unlock()
	}()
	for j := range jobs {
		switch j := j.(type) {
		case zeroRun:
			if !im.opts.TargetZeroed {
				t := time.Now()
				if err := im.dst.Zero(j.off, j.n); err != nil {
					return err
				}
				st.Write += time.Since(t)
			}
			im.zeroed.Add(j.n)
		case *fetch:
			t := time.Now()
			data, err := im.st.ReadPack(ctx, j.pack, j.off, j.n)
			st.Download += time.Since(t)
			if err != nil {
				return err
			}
			im.fetched.Add(int64(len(data)))
			for _, w := range j.blobs {
				t := time.Now()
				s := int64(w.ref.Offset) - j.off
				buf, err = o.Open(w.ref, data[s:s+int64(w.ref.Length)], buf[:0])
				st.Decode += time.Since(t)
				if err != nil {
					return err
				}
				t = time.Now()
				for _, off := range w.offs {
					if _, err := im.dst.WriteAt(buf, off); err != nil {
						return fmt.Errorf("writing at %d: %w", off, err)
					}
					im.written.Add(int64(len(buf)))
					im.chunks.Add(1)
				}
				st.Write += time.Since(t)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func runtimeWorkers() int { return runtime.GOMAXPROCS(0) }
