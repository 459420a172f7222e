package mover

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/blockmover/blockmover/internal/hugemem"
	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo"
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
	// Downloads is the number of parallel fetch, decrypt and verify
	// workers (default 2·GOMAXPROCS, at least 4).
	Downloads int
	// Writers is the number of goroutines that zero holes on the target
	// and, where the import writes directly (O_DIRECT: see Buffered),
	// write the verified chunks, fed by the download workers (default 1).
	// A direct write waits for the storage, using no CPU, while the
	// workers decode; two writers keep a second one queued (1 MiB direct
	// writes of 2.4 GiB onto the project's ext4 disk: a median 2.1 s from
	// two goroutines, 3.05 s from one, at load 13–20), at the cost of two
	// more chunk buffers and a second scratch buffer (peak heap 76 → 121
	// MB); whole imports on a loaded machine could not tell one from two.
	//
	// Through the page cache a write is the kernel's copy and no waiting,
	// so there each download worker writes the chunks it decoded itself,
	// from one buffer of its own that is still in its core's cache, one
	// worker at a time (the inode lock serialises writes to a file
	// anyway; a mutex of the import's waits more cheaply): onto tmpfs
	// 1.86–1.90 s and 3.2 CPU s for the 4 GiB image of BENCHMARKS.md,
	// against 2.08–2.54 s and 3.5–4.4 CPU s handing every chunk to a
	// writer goroutine (six pairs, session 27). (Copying into shared mappings of a
	// tmpfs target escapes the lock, but the kernel then zeroes and maps
	// every page: 50% more CPU for the writes; session 14.)
	Writers int
	// TargetZeroed promises that the target reads as zeros already, so
	// holes are not written. A Target with a method Fresh() bool that
	// returns true (a new or empty file) is taken as zeroed too.
	TargetZeroed bool
	// AssumeBase: the target already holds this snapshot (of the same
	// repository), e.g. a replica restored earlier. Only entries that differ
	// between it and the snapshot are written; unchanged segments are not
	// even planned.
	AssumeBase *repo.Snapshot
	// VerifyTarget reads the target and writes only what differs from the
	// snapshot: each chunk's range is hashed and compared with the chunk's
	// ID, each hole checked for zeros. For a target whose content is not
	// known for certain. The target must implement io.ReaderAt.
	VerifyTarget bool
	// Buffered writes through the target's page cache even where it
	// could be written directly (Device.OpenDirect; see importdirect.go):
	// for comparisons, and for storage that misbehaves with O_DIRECT.
	Buffered bool
	// Window is how many bytes of chunks (holes not counted) are planned
	// at once (default 1 GiB), in at most maxWindowPages pages: it bounds
	// the plan's memory, which grows with the chunks and zero runs
	// planned, not with holes. Chunks of one window are fetched together,
	// a run of a pack's blobs per ranged read, so a sparse volume is read
	// in few requests.
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
	// backend; SkippedBytes were already right on the target (AssumeBase,
	// VerifyTarget); VerifiedBytes of the target were read to check.
	WrittenBytes, ZeroedBytes, FetchedBytes int64
	SkippedBytes, VerifiedBytes             int64
	// DirectBytes of the written ones went around the page cache
	// (O_DIRECT: see ImportOptions.Buffered), the rest through it.
	DirectBytes int64
	Chunks      int64
	Duration    time.Duration
	Stages      Stages
}

// fetch is a run of blobs of one pack, loaded with one ranged read, and
// the target offsets each blob is written to.
type fetch struct {
	refs []repo.BlobRef // sorted by offset
	offs [][]int64      // offs[i]: where refs[i] goes
}

// want is one blob and every target offset it is written to.
type want struct {
	ref  repo.BlobRef
	offs []int64
}

type zeroRun struct{ off, n int64 }

// write is a verified chunk on its way to a writer, or a zero run (plain
// nil). plain lies in buf, one of the importer's buffers, which goes back
// to them once written.
type write struct {
	plain, buf []byte
	offs       []int64
	zero       zeroRun
}

type importer struct {
	st    ImportRepo
	snap  *repo.Snapshot
	dst   Target
	opts  ImportOptions
	start time.Time

	written, zeroed, fetched, chunks, skipped, verified, directBytes atomic.Int64

	bufs plainBuffers
	// direct, if set, writes the aligned middle of each chunk around the
	// page cache (importdirect.go).
	direct *DirectFile
	// kick asks the writeback goroutine to start writing back (nil: the
	// target cannot); sinceKick counts the bytes written since.
	kick      chan struct{}
	sinceKick atomic.Int64

	// writeMu serialises the download workers' writes through the page
	// cache, and the writers' zeroing beside them (Writers).
	writeMu sync.Mutex

	mu     sync.Mutex
	stages Stages
}

// Import writes snapshot snap from st onto dst and syncs it. Every chunk is
// verified against its ID before it is written; holes are zeroed (punched
// in files, BLKZEROOUT on devices) unless the target is known to be zeroed.
// Chunks are fetched with ranged reads, pack by pack, by parallel workers;
// memory is bounded by the options, not by the snapshot's size. The target
// must hold at least snap.Size bytes.
func Import(ctx context.Context, st ImportRepo, snap *repo.Snapshot, dst Target, opts ImportOptions) (*ImportResult, error) {
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
	if o.VerifyTarget {
		if _, ok := dst.(io.ReaderAt); !ok {
			return nil, errors.New("import: verifying the target needs a readable target")
		}
	}
	if b := o.AssumeBase; b != nil && b.SegmentSize != snap.SegmentSize {
		return nil, fmt.Errorf("import: base snapshot %s has segments of %d bytes, snapshot %s of %d: not from the same repository", b.ID.Short(), b.SegmentSize, snap.ID.Short(), snap.SegmentSize)
	}
	align := int64(4096)
	if dt, ok := dst.(interface{ OpenDirect() (*DirectFile, error) }); ok && !o.Buffered {
		// Where the target cannot, the page cache it is, as before.
		if df, err := dt.OpenDirect(); err == nil {
			defer df.Close()
			im.direct, align = df, df.Align()
		}
	}
	if o.Writers <= 0 {
		o.Writers = 1
	}
	// Chunks in flight between the workers and the writers: enough for
	// every worker to decode one while the writers hold two each.
	im.bufs.init(o.Downloads+2*o.Writers, align)
	// Every return below comes after g.Wait: no worker or writer is left.
	defer im.bufs.release()
	g, gctx := safego.WithContext(ctx)
	jobs := make(chan *fetch, o.Downloads)
	writes := make(chan write, o.Downloads+o.Writers)
	var producers sync.WaitGroup
	producers.Add(1 + o.Downloads)
	g.Go(func() error {
		defer producers.Done()
		defer close(jobs)
		return im.plan(gctx, jobs, writes)
	})
	for range o.Downloads {
		g.Go(func() error {
			defer producers.Done()
			return im.work(gctx, jobs, writes)
		})
	}
	g.Go(func() error {
		producers.Wait()
		close(writes)
		return nil
	})
	stopWriteback := im.startWriteback()
	for range o.Writers {
		g.Go(func() error { return im.writer(gctx, writes) })
	}
	stop := runProgress(ctx, o.Progress, o.ProgressInterval, im.current)
	err := g.Wait()
	stopWriteback()
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
		SkippedBytes: im.skipped.Load(), VerifiedBytes: im.verified.Load(), DirectBytes: im.directBytes.Load(),
		Chunks: im.chunks.Load(), Duration: time.Since(im.start), Stages: im.stages,
	}, nil
}

func (im *importer) current() Progress {
	return Progress{
		Size: im.snap.Size, DoneBytes: im.written.Load() + im.zeroed.Load() + im.skipped.Load(),
		FetchedBytes: im.fetched.Load(), WrittenBytes: im.written.Load(), Elapsed: time.Since(im.start),
	}
}

// plan reads the snapshot's pages a window at a time, as the pager
// (importpages.go) fetches them, and sends fetch jobs to the workers and
// zero runs to the writers.
func (im *importer) plan(ctx context.Context, jobs chan<- *fetch, writes chan<- write) error {
	pctx, cancel := context.WithCancel(ctx)
	items := make(chan pageItem, pageBatch)
	var perr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer safego.Recover(&perr)
		perr = im.pageAheadRun(pctx, items)
	}()
	err := im.planPages(ctx, items, done, jobs, writes)
	cancel()
	<-done
	if perr != nil && (err == nil || errors.Is(err, errPagesEnded)) {
		err = perr
	}
	return err
}

// errPagesEnded: the pager stopped before the last page (its own error
// says why).
var errPagesEnded = errors.New("import: the page fetches ended early")

// planPages is plan: items brings the pages in order; pagerDone is closed
// when the pager has returned.
func (im *importer) planPages(ctx context.Context, items <-chan pageItem, pagerDone <-chan struct{}, jobs chan<- *fetch, writes chan<- write) error {
	for first := 0; first < len(im.snap.Pages); {
		w := windowPlan{byID: map[repo.ID]*want{}}
		i := first
		for ; i < len(im.snap.Pages) && i-first < maxWindowPages && w.data < im.opts.Window; i++ {
			var it pageItem
			select {
			case v, ok := <-items:
				if !ok {
					return errPagesEnded
				}
				it = v
			case <-ctx.Done():
				return ctx.Err()
			}
			if it.i != i {
				return fmt.Errorf("import: internal: page %d planned as page %d", it.i, i)
			}
			if err := im.planPage(ctx, it, pagerDone, &w); err != nil {
				return err
			}
		}
		first = i
		if len(w.checks) > 0 {
			var err error
			if w.zeros, err = im.verify(ctx, w.checks, w.byID, w.zeros); err != nil {
				return err
			}
		}
		for _, z := range w.zeros {
			if err := sendCtx(ctx, writes, write{zero: z}); err != nil {
				return err
			}
		}
		for _, f := range im.coalesce(w.byID) {
			if err := sendCtx(ctx, jobs, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// windowPlan is what the pages of one window ask for: blobs to fetch,
// zero runs, and target ranges to check (VerifyTarget).
type windowPlan struct {
	byID   map[repo.ID]*want
	zeros  []zeroRun
	checks []check
	data   int64 // bytes of chunks planned
}

// maxWindowPages bounds the pages of one planning window (256 GiB of
// volume at the default segment size), and so its zero runs.
const maxWindowPages = 4096

// planPage adds page it.i to w, once its entries (and its base's) are
// loaded.
func (im *importer) planPage(ctx context.Context, it pageItem, pagerDone <-chan struct{}, w *windowPlan) error {
	start, end := im.snap.PageRange(it.i)
	if it.skip {
		im.skipped.Add(end - start)
		return nil
	}
	entries, err := it.page.wait(ctx, pagerDone)
	if err != nil {
		return err
	}
	var same map[basePiece]bool
	var holes []zeroRun // the base's holes in this page, merged
	if it.base != nil {
		be, err := it.base.wait(ctx, pagerDone)
		if err != nil {
			return fmt.Errorf("base snapshot: %w", err)
		}
		same = map[basePiece]bool{}
		off := start
		for _, e := range be {
			same[basePiece{off, e}] = true
			if e.Hole {
				holes = addZero(holes, off, e.Length)
			}
			off += e.Length
		}
	}
	off := start
	for _, e := range entries {
		switch {
		case same[basePiece{off, e}] || e.Hole && inHoles(holes, off, e.Length):
			im.skipped.Add(e.Length)
		case im.opts.VerifyTarget:
			w.checks = append(w.checks, check{off: off, e: e})
			w.data += e.Length
		case e.Hole:
			w.zeros = addZero(w.zeros, off, e.Length)
		default:
			if err := im.want(w.byID, e, off); err != nil {
				return err
			}
			w.data += e.Length
		}
		off += e.Length
	}
	return nil
}

// inHoles reports whether [off, off+n) lies within one of the sorted,
// merged holes.
func inHoles(holes []zeroRun, off, n int64) bool {
	i := sort.Search(len(holes), func(i int) bool { return holes[i].off+holes[i].n > off })
	return i < len(holes) && holes[i].off <= off && off+n <= holes[i].off+holes[i].n
}

func addZero(zeros []zeroRun, off, n int64) []zeroRun {
	if k := len(zeros); k > 0 && zeros[k-1].off+zeros[k-1].n == off {
		zeros[k-1].n += n
		return zeros
	}
	return append(zeros, zeroRun{off, n})
}

// want adds chunk e at off to the blobs to fetch.
func (im *importer) want(byID map[repo.ID]*want, e repo.Entry, off int64) error {
	w := byID[e.ID]
	if w == nil {
		ref, ok := im.st.Lookup(e.ID)
		if !ok {
			return fmt.Errorf("snapshot %s needs chunk %s at offset %d: %w", im.snap.ID.Short(), e.ID.Short(), off, repo.ErrBlobMissing)
		}
		if int64(ref.RawLength) != e.Length {
			return fmt.Errorf("snapshot %s: chunk %s at offset %d is %d bytes in the index, %d in the snapshot", im.snap.ID.Short(), e.ID.Short(), off, ref.RawLength, e.Length)
		}
		w = &want{ref: ref}
		byID[e.ID] = w
	}
	w.offs = append(w.offs, off)
	return nil
}

// basePage returns the ID of the AssumeBase page that covers exactly page
// i of the snapshot, or nil.
func (im *importer) basePage(i int) *repo.ID {
	b := im.opts.AssumeBase
	if b == nil || i >= len(b.Pages) {
		return nil
	}
	bs, be := b.PageRange(i)
	s, e := im.snap.PageRange(i)
	if bs != s || be != e {
		return nil
	}
	return &b.Pages[i]
}

// check is a snapshot entry whose range on the target is to be compared.
type check struct {
	off int64
	e   repo.Entry
	ok  bool
}

// verify reads the target ranges of checks in parallel and turns those that
// differ into zero runs and wanted blobs.
func (im *importer) verify(ctx context.Context, checks []check, byID map[repo.ID]*want, zeros []zeroRun) ([]zeroRun, error) {
	ra := im.dst.(io.ReaderAt)
	g, gctx := safego.WithContext(ctx)
	g.SetLimit(im.opts.Downloads)
	for i := range checks {
		g.Go(func() error {
			c := &checks[i]
			buf := make([]byte, min(c.e.Length, 4<<20))
			h := im.st.NewHasher()
			if c.e.Hole {
				c.ok = true
				for off := c.off; off < c.off+c.e.Length && c.ok; off += int64(len(buf)) {
					b := buf[:min(int64(len(buf)), c.off+c.e.Length-off)]
					if _, err := ra.ReadAt(b, off); err != nil {
						return fmt.Errorf("reading target at %d: %w", off, err)
					}
					c.ok = isZero(b)
				}
			} else {
				if _, err := ra.ReadAt(buf, c.off); err != nil {
					return fmt.Errorf("reading target at %d: %w", c.off, err)
				}
				c.ok = h.Sum(buf) == c.e.ID
			}
			im.verified.Add(c.e.Length)
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, c := range checks {
		switch {
		case c.ok:
			im.skipped.Add(c.e.Length)
		case c.e.Hole:
			zeros = addZero(zeros, c.off, c.e.Length)
		default:
			if err := im.want(byID, c.e, c.off); err != nil {
				return nil, err
			}
		}
	}
	return zeros, nil
}

// isZero reports whether b is all zeros: its first byte is zero and every
// byte equals the one before it (one memcmp, no zero buffer needed).
func isZero(b []byte) bool {
	return len(b) == 0 || b[0] == 0 && bytes.Equal(b[1:], b[:len(b)-1])
}

// coalesce groups wanted blobs into ranged reads, pack by pack.
func (im *importer) coalesce(byID map[repo.ID]*want) []*fetch {
	byPack := map[repo.ID][]*want{}
	for _, w := range byID {
		byPack[w.ref.Pack] = append(byPack[w.ref.Pack], w)
	}
	var out []*fetch
	for _, ws := range byPack {
		slices.SortFunc(ws, func(a, b *want) int { return cmp.Compare(a.ref.Offset, b.ref.Offset) })
		for len(ws) > 0 {
			// The run ws[:k]: gaps of at most MaxGap, a range of at most
			// MaxRange (or one blob).
			start, end := int64(ws[0].ref.Offset), int64(ws[0].ref.Offset)+int64(ws[0].ref.Length)
			k := 1
			for ; k < len(ws); k++ {
				off, n := int64(ws[k].ref.Offset), int64(ws[k].ref.Length)
				if off-end > im.opts.MaxGap || off+n-start > im.opts.MaxRange {
					break
				}
				end = off + n
			}
			f := &fetch{refs: make([]repo.BlobRef, k), offs: make([][]int64, k)}
			for i, w := range ws[:k] {
				f.refs[i], f.offs[i] = w.ref, w.offs
			}
			out = append(out, f)
			ws = ws[k:]
		}
	}
	// Fetch in target order, so writes move forward through the device.
	slices.SortFunc(out, func(a, b *fetch) int { return cmp.Compare(a.offs[0][0], b.offs[0][0]) })
	return out
}

// sendCtx sends v on ch unless ctx ends first.
func sendCtx[T any](ctx context.Context, ch chan<- T, v T) error {
	select {
	case ch <- v:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// work runs one download worker: it loads fetches, each blob decrypted,
// decompressed and verified into a buffer of im.bufs, and hands the
// chunks to the writers; or, through the page cache, into a buffer of its
// own, and writes them itself (ImportOptions.Writers).
func (im *importer) work(ctx context.Context, jobs <-chan *fetch, writes chan<- write) error {
	var o repo.BlobOpener // this worker's fetched range
	// Ranges are read into huge pages too: into the Go heap's fresh
	// memory, the copy faulted page by page (up to 16 MiB per worker).
	o.SetRangeAllocator(func(old []byte, n int) []byte {
		im.bufs.drop(old)
		return im.bufs.alloc(n)
	})
	var st Stages
	defer func() {
		im.mu.Lock()
		im.stages.Download += st.Download
		im.stages.DecryptVerify += st.DecryptVerify
		im.stages.Write += st.Write
		im.mu.Unlock()
	}()
	// Through the page cache this worker writes its chunks itself, from
	// own (see ImportOptions.Writers).
	inline := im.direct == nil
	var own []byte
	for f := range jobs {
		var buf []byte // blob i's, from buf(i) to fn(i)
		ls, err := im.st.LoadBlobsInto(ctx, &o, f.refs, func(i, n int) ([]byte, error) {
			if inline {
				if cap(own) < n {
					own = make([]byte, n)
				}
				return own[:0], nil
			}
			// Decoded in phase with the target's alignment: see
			// importdirect.go.
			ph := im.phase(f.offs[i][0])
			b, err := im.bufs.get(ctx, n, ph)
			buf = b
			return b[ph:ph], err
		}, func(i int, plain []byte) error {
			if inline {
				t := time.Now()
				im.writeMu.Lock()
				err := im.writeChunk(plain, f.offs[i], nil)
				im.writeMu.Unlock()
				st.Write += time.Since(t)
				return err
			}
			if err := sendCtx(ctx, writes, write{plain: plain, buf: buf, offs: f.offs[i]}); err != nil {
				im.bufs.put(buf)
				return err
			}
			return nil
		})
		st.Download += ls.Read
		st.DecryptVerify += ls.Open
		im.fetched.Add(ls.Bytes)
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

// writer runs one writing goroutine: it writes chunks to their offsets and
// zeroes runs (unless the target is zeroed already).
func (im *importer) writer(ctx context.Context, writes <-chan write) error {
	var busy time.Duration
	var scratch []byte
	defer func() {
		im.mu.Lock()
		im.stages.Write += busy
		im.mu.Unlock()
	}()
	for w := range writes {
		t := time.Now()
		if w.plain == nil {
			if !im.opts.TargetZeroed {
				if err := im.zero(w.zero); err != nil {
					return err
				}
			}
			im.zeroed.Add(w.zero.n)
		} else {
			err := im.writeChunk(w.plain, w.offs, &scratch)
			im.bufs.put(w.buf)
			if err != nil {
				return err
			}
		}
		busy += time.Since(t)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// writeChunk writes chunk p at each of offs. scratch is the calling
// writer's (nil: the import does not write directly).
func (im *importer) writeChunk(p []byte, offs []int64, scratch *[]byte) error {
	for _, off := range offs {
		if err := im.writeAt(p, off, scratch); err != nil {
			return err
		}
		im.written.Add(int64(len(p)))
		im.chunks.Add(1)
	}
	return nil
}

// zero zeroes run z, beside the workers' writes through the page cache
// one at a time (writeMu), as they are among themselves.
func (im *importer) zero(z zeroRun) error {
	if im.direct == nil {
		im.writeMu.Lock()
		defer im.writeMu.Unlock()
	}
	return im.dst.Zero(z.off, z.n)
}

// writebackEvery is how many bytes an import writes between two requests
// to start writing the target back.
const writebackEvery = 64 << 20

// startWriteback starts the goroutine that, on a target with a
// StartWriteback method (Device), asks the kernel to write back what was
// written, about every writebackEvery bytes: the storage then works while
// the import runs instead of during the final Sync (the kernel's own
// background writeback starts only at a tenth of the memory dirty).
// Writers never wait for it. It returns the function that stops it.
func (im *importer) startWriteback() (stop func()) {
	wb, ok := im.dst.(interface{ StartWriteback() error })
	if !ok {
		return func() {}
	}
	im.kick = make(chan struct{}, 1)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-im.kick:
				// Advice: an error changes nothing but when the data
				// reaches the disk, and Sync reports real failures.
				_ = wb.StartWriteback()
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// wrote counts n bytes written and kicks the writeback goroutine every
// writebackEvery bytes.
func (im *importer) wrote(n int64) {
	if im.kick == nil || im.sinceKick.Add(n) < writebackEvery {
		return
	}
	im.sinceKick.Store(0)
	select {
	case im.kick <- struct{}{}:
	default: // one is pending already
	}
}

// plainBuffers hands out the buffers chunks are decoded into, at most max
// of them at once (get blocks until one is put back), so that the chunks
// between the workers and the writers bound memory. A buffer is reused
// for any chunk it can hold, and grown for a larger one.
//
// The buffers are huge-page mappings of their own (internal/hugemem):
// written directly from 4 KiB pages, the import's writes took 2–3 times
// as long on the project's guest (onto tmpfs no difference was
// measured). They are unmapped by release, which the import calls once
// no goroutine can touch them. The workers' pack-range buffers come from
// alloc and drop too (work), outside get's limit: one per worker.
type plainBuffers struct {
	tokens chan struct{} // one per buffer handed out
	free   chan []byte
	align  int64 // of every buffer's first byte

	mu     sync.Mutex
	mapped map[*byte][]byte // the hugemem buffers, by first byte
}

func (p *plainBuffers) init(max int, align int64) {
	p.tokens = make(chan struct{}, max)
	p.free = make(chan []byte, max)
	p.align = align
	p.mapped = map[*byte][]byte{}
}

// get returns an empty buffer with capacity for n bytes after a phase of
// ph bytes (ph < the alignment; see importdirect.go).
func (p *plainBuffers) get(ctx context.Context, n, ph int) ([]byte, error) {
	select {
	case p.tokens <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var b []byte
	select {
	case b = <-p.free:
	default:
	}
	if cap(b) < ph+n {
		// A new buffer serves a chunk of n bytes in any phase; the one it
		// replaces (too small) is no one's now.
		p.drop(b)
		b = p.alloc(n + int(p.align))
	}
	return b[:0], nil
}

// alloc returns a new buffer of n bytes, aligned to p.align: a huge-page
// mapping where one can be had, else memory of the Go heap (the import
// works the same, slower).
func (p *plainBuffers) alloc(n int) []byte {
	if p.align <= hugemem.PageSize {
		if b, err := hugemem.Alloc(n); err == nil {
			p.mu.Lock()
			p.mapped[unsafe.SliceData(b)] = b
			p.mu.Unlock()
			return b
		}
	}
	return alignedBuffer(nil, n, p.align)
}

// drop unmaps b if it is a mapped buffer; b must be no one's.
func (p *plainBuffers) drop(b []byte) {
	if cap(b) == 0 {
		return
	}
	p.mu.Lock()
	m, ok := p.mapped[unsafe.SliceData(b)]
	delete(p.mapped, unsafe.SliceData(b))
	p.mu.Unlock()
	if ok {
		_ = hugemem.Free(m) // as Alloc returned it: cannot fail
	}
}

// put returns a buffer that get handed out.
func (p *plainBuffers) put(b []byte) {
	select {
	case p.free <- b[:0]:
	default:
	}
	<-p.tokens
}

// release unmaps every mapped buffer, wherever it is: only once no
// goroutine of the import is left that could touch one.
func (p *plainBuffers) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, b := range p.mapped {
		_ = hugemem.Free(b)
		delete(p.mapped, k)
	}
}

func runtimeWorkers() int { return runtime.GOMAXPROCS(0) }
