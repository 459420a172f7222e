package mover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/internal/freelist"
	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo"
)

// ExportOptions describe an export. The zero value of every tuning field
// picks a default; none of them changes where chunks are cut.
type ExportOptions struct {
	Volume string            // required: the volume's name in the repository
	Source string            // recorded in the snapshot (e.g. the device path)
	Tags   map[string]string // recorded in the snapshot

	// Workers cut, hash, compress and encrypt (default GOMAXPROCS).
	Workers int
	// Uploads is the number of packs uploaded in parallel (default 2).
	Uploads int
	// PackSize overrides the repository's pack size (bytes).
	PackSize int
	// ReadSize is the size of one read from the source (default 4 MiB).
	ReadSize int
	// Base makes the export incremental: an earlier snapshot of the volume
	// in the same repository. Its unchanged chunks are reused.
	Base *repo.Snapshot
	// Changes lists the byte ranges that may differ from Base (changed-block
	// tracking). Only they are read, with the chunks around them; every
	// other entry of Base is reused without reading. Without Changes (nil), an
	// export with a Base reads everything and stores only new chunks; an
	// empty Changes that is not nil means nothing changed, and nothing is
	// read but the VerifyUnchanged sample.
	Changes changes.ChangeList
	// VerifyUnchanged is the fraction (0..1) of reused chunks that are read
	// again and checked against their IDs: a wrong change list then fails
	// the export instead of silently making a wrong snapshot.
	VerifyUnchanged float64

	// Progress, if set, is called about every ProgressInterval and once at
	// the end, from one goroutine.
	Progress         func(Progress)
	ProgressInterval time.Duration
}

// ErrChangeListWrong: a chunk the change list called unchanged differs.
var ErrChangeListWrong = errors.New("change list is wrong")

// Progress is a running count of an export or import.
type Progress struct {
	Size        int64 `json:"size"`
	DoneBytes   int64 `json:"done_bytes"` // volume bytes fully processed
	ReadBytes   int64 `json:"read_bytes"`
	ZeroBytes   int64 `json:"zero_bytes"`
	NewBytes    int64 `json:"new_bytes"`
	StoredBytes int64 `json:"stored_bytes"`
	// WrittenBytes and FetchedBytes (bytes downloaded from the
	// repository, as in ImportReport): import only. ReadBytes, NewBytes
	// and StoredBytes are export's.
	WrittenBytes int64         `json:"written_bytes,omitempty"`
	FetchedBytes int64         `json:"fetched_bytes,omitempty"`
	Elapsed      time.Duration `json:"-"`
}

// Stages times the pipeline's steps, summed over workers (CPU-bound steps)
// or over parallel requests (uploads, downloads). Stage time divided by
// wall time shows which stage bounds the throughput.
type Stages struct {
	Read      time.Duration `json:"read"`
	ZeroCheck time.Duration `json:"zero_check"`
	Cut       time.Duration `json:"cut"`
	Hash      time.Duration `json:"hash"`
	// Compress includes the test that skips random-looking chunks;
	// Encrypt includes the check that opens every seal again.
	Compress      time.Duration `json:"compress"`
	Encrypt       time.Duration `json:"encrypt"`
	Upload        time.Duration `json:"upload"`
	Download      time.Duration `json:"download,omitempty"`
	DecryptVerify time.Duration `json:"decrypt_verify,omitempty"`
	Write         time.Duration `json:"write,omitempty"`
}

// Each calls f for every stage in pipeline order (export, then import),
// with its name as in the JSON form.
func (s Stages) Each(f func(name string, d time.Duration)) {
	f("read", s.Read)
	f("zero_check", s.ZeroCheck)
	f("cut", s.Cut)
	f("hash", s.Hash)
	f("compress", s.Compress)
	f("encrypt", s.Encrypt)
	f("upload", s.Upload)
	f("download", s.Download)
	f("decrypt_verify", s.DecryptVerify)
	f("write", s.Write)
}

// ExportResult describes a finished export.
type ExportResult struct {
	Snapshot *repo.Snapshot
	Size     int64
	// ReadBytes were read from the source; ZeroBytes are holes (never
	// stored); NewBytes are plaintext bytes the repository did not hold;
	// StoredBytes were written to the backend (packs, index, snapshot).
	ReadBytes, ZeroBytes, NewBytes, StoredBytes int64
	// ReusedBytes were taken from the base snapshot without reading.
	ReusedBytes       int64
	Chunks, NewChunks int64
	// DeferredChunks were new to the repository but claimed by another
	// export running at once (repo/claims.go): referenced, not stored.
	// ReclaimedChunks of them were stored after all, read again from the
	// source, because their claimant ended without storing them (it
	// failed, was killed, or was too slow); they count in NewChunks.
	DeferredChunks, ReclaimedChunks int64
	Duration                        time.Duration
	Stages                          Stages
}

// newChunk is a chunk the repository lacks, on its way to a packer. Data
// comes from the buffer pool and goes back to it once packed.
type newChunk struct {
	id   repo.ID
	data []byte
}

// bufPool hands out chunk buffers of size bytes and keeps returned ones
// for the rest of the export (a free list, not a sync.Pool: see freelist).
type bufPool struct {
	size int
	free freelist.List
}

func (b *bufPool) get() []byte {
	if s := b.free.Get(b.size); s != nil {
		return s[:b.size]
	}
	return make([]byte, b.size)
}

func (b *bufPool) put(s []byte) {
	if cap(s) < b.size {
		return
	}
	b.free.Put(s)
}

type exporter struct {
	st    ExportRepo
	src   Source
	opts  ExportOptions
	p     chunk.Params
	bufs  bufPool
	size  int64
	start time.Time

	changes []span // sorted, merged; nil without a change list

	claims    claimSharer // nil: the repository does not share claims
	deferMu   sync.Mutex
	deferred  map[repo.ID]span // chunks deferred to other writers: where they lie
	reclaimed atomic.Int64

	doneBytes, readBytes, zeroBytes, newBytes, reusedBytes, verifiedBytes atomic.Int64
	chunks, newChunks                                                     atomic.Int64

	mu       sync.Mutex
	stages   Stages
	pages    []repo.ID
	snapshot *repo.Snapshot
	written0 int64 // st.WrittenBytes at the start
}

// withDefaults fills in the tuning fields left zero.
func (o ExportOptions) withDefaults() ExportOptions {
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Uploads <= 0 {
		o.Uploads = 2
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = time.Second
	}
	return o
}

// defaultReadSize is the size of one read of a full export (an
// incremental one reads 128 KiB around each change).
const defaultReadSize = 4 << 20

// ExportMemory estimates the bytes an export with opts into a repository
// with configuration cfg holds in buffers at its peak, whatever the
// volume's size: the packs being filled (one per worker), queued (one) and
// uploaded (Uploads), each up to the pack size plus a chunk; the chunk
// buffers of the cutters, of the queue to the packers and of the packers
// (four chunks per worker); each packer's compression and seal-check
// buffers (two chunks); and each cutter's read buffer. The repository's
// index comes on top (FORMAT.md: about 56 bytes per blob). Go's garbage
// collector lets the heap grow past what is live, so a caller that must
// bound its memory sets a soft limit (debug.SetMemoryLimit) somewhat above
// this, as the mover command does.
func ExportMemory(opts ExportOptions, cfg repo.Config) int64 {
	o := opts.withDefaults()
	chunk := int64(cfg.Chunking.MaxChunk())
	pack := int64(cfg.PackSize)
	if o.PackSize > 0 {
		pack = int64(o.PackSize)
	}
	read := int64(o.ReadSize)
	if read <= 0 {
		read = defaultReadSize
	}
	w := int64(o.Workers)
	return (w+1+int64(o.Uploads))*(pack+chunk) + 4*w*chunk + 2*w*chunk + w*read
}

// Export reads src and stores it as a new snapshot of opts.Volume in st.
//
// The source is cut into segments that workers cut in parallel; holes are
// never hashed or stored, chunks the repository holds cost a hash, new
// chunks are compressed, sealed and packed by a packer per worker, and
// packs are uploaded in parallel. The snapshot is written last, after every
// pack and index file it needs, so an interrupted export leaves the
// repository valid (and its packs reusable by the next run once indexed).
//
// If src has a method CheckUnchanged() error, it is called after reading:
// a source that changed size fails the export. Export is safe to run
// concurrently with other exports into the same repository; when st
// offers claims (a *repo.Repository does, see repo/claims.go), a chunk
// another export is storing at that moment is deferred to it rather than
// stored twice, and before its snapshot Export waits until every deferred
// chunk is in the index (up to a minute; seconds if the other was killed)
// or reads it again from src and stores it itself.
//
// When Export fails, including when ctx is cancelled (a pod's SIGTERM),
// it still indexes the packs it uploaded, spending up to 15 s on it after
// cancellation, so that the next export of the volume reuses them.
func Export(ctx context.Context, src Source, st ExportRepo, opts ExportOptions) (*ExportResult, error) {
	if err := repo.CheckVolumeName(opts.Volume); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	cfg := st.Config()
	e := &exporter{st: st, src: src, opts: opts, p: cfg.Chunking, size: src.Size(), start: time.Now()}
	if e.size <= 0 {
		return nil, fmt.Errorf("export: source is empty (size %d)", e.size)
	}
	e.opts = e.opts.withDefaults()
	e.bufs.size = e.p.MaxChunk()
	// Chunk buffers out at once: one being cut per worker, the chunks
	// channel (2 per worker), one being packed per worker, and a few
	// between the stages.
	e.bufs.free.Max = 4*e.opts.Workers + 4
	e.written0 = st.WrittenBytes()
	if opts.Changes != nil || opts.VerifyUnchanged != 0 {
		if opts.Base == nil {
			return nil, errors.New("export: a change list needs a base snapshot")
		}
	}
	if !(opts.VerifyUnchanged >= 0 && opts.VerifyUnchanged <= 1) { // NaN too
		return nil, fmt.Errorf("export: verify fraction %g is not within 0..1", opts.VerifyUnchanged)
	}
	if b := opts.Base; b != nil {
		if b.SegmentSize != e.p.SegmentSize {
			return nil, fmt.Errorf("export: base snapshot %s has segments of %d bytes, the repository %d: it is from another repository", b.ID.Short(), b.SegmentSize, e.p.SegmentSize)
		}
		if opts.Changes != nil {
			if err := opts.Changes.Validate(e.size); err != nil {
				return nil, fmt.Errorf("export: %w", err)
			}
			e.changes = make([]span, 0, len(opts.Changes))
			for _, c := range opts.Changes {
				e.changes = append(e.changes, span{c.Offset, c.End()})
			}
		}
	}
	e.pages = make([]repo.ID, e.p.Segments(e.size))
	stopClaims := func() {}
	if cs, ok := st.(claimSharer); ok {
		e.claims = cs
		e.deferred = map[repo.ID]span{}
		stopClaims = e.keepClaims(ctx)
	}

	g, gctx := safego.WithContext(ctx)
	segs := make(chan int64)
	chunks := make(chan newChunk, 2*e.opts.Workers)
	packs := make(chan *repo.Pack, 1)

	g.Go(func() error {
		defer close(segs)
		for i := range int64(len(e.pages)) {
			select {
			case segs <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	var cutters, packers sync.WaitGroup
	for range e.opts.Workers {
		cutters.Add(1)
		g.Go(func() error {
			defer cutters.Done()
			return e.cutSegments(gctx, segs, chunks)
		})
	}
	g.Go(func() error {
		cutters.Wait()
		close(chunks)
		return nil
	})
	for range e.opts.Workers {
		packers.Add(1)
		g.Go(func() error {
			defer packers.Done()
			return e.pack(gctx, chunks, packs)
		})
	}
	g.Go(func() error {
		packers.Wait()
		close(packs)
		return nil
	})
	for range e.opts.Uploads {
		g.Go(func() error { return e.upload(gctx, packs) })
	}
	stopProgress := e.progress(ctx)
	err := g.Wait()
	if err == nil {
		err = e.finish(ctx)
	}
	stopProgress()
	stopClaims()
	if err != nil {
		e.salvage(ctx)
		return nil, err
	}
	if e.claims != nil {
		e.claims.WithdrawClaims(ctx)
	}
	return e.result(), nil
}

// salvageTimeout bounds how long a failed export spends indexing the packs
// it uploaded: well inside the 30 s a pod gets between SIGTERM and SIGKILL.
const salvageTimeout = 15 * time.Second

// salvage runs after the pipeline failed or was cancelled, when no worker
// is left: it flushes the repository (the pending page pack and an index
// file for the packs uploaded since the last checkpoint) under a context
// that ignores ctx's cancellation but not its values, for at most
// salvageTimeout, so that a rerun finds those chunks instead of uploading
// them again. Its own error is dropped: the export's error is the one to
// report, and packs left unindexed are only garbage for gc.
func (e *exporter) salvage(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), salvageTimeout)
	defer cancel()
	_ = e.st.Flush(fctx)
	if e.claims != nil {
		// After the flush: what this export uploaded is indexed, and
		// others store themselves what it claimed and never stored.
		e.claims.WithdrawClaims(fctx)
	}
}

// worker is one cutting goroutine's state: it cuts segments, hashes
// chunks and hands new ones to the packers.
type worker struct {
	e        *exporter
	cutter   *chunk.Cutter
	hasher   *repo.Hasher
	opener   repo.BlobOpener // the base's pages
	out      chan<- newChunk
	hashTime time.Duration
}

// add hashes a piece and passes it on if the repository lacks it; it
// returns the piece's chunk-list entry.
func (w *worker) add(ctx context.Context, pc chunk.Piece) (repo.Entry, error) {
	if pc.Hole {
		return repo.Entry{Length: pc.Length, Hole: true}, nil
	}
	e := w.e
	t := time.Now()
	id := w.hasher.Sum(pc.Data)
	w.hashTime += time.Since(t)
	e.chunks.Add(1)
	if !e.reserve(id, pc) {
		e.bufs.put(pc.Data)
		return repo.Entry{Length: pc.Length, ID: id}, nil
	}
	e.newChunks.Add(1)
	e.newBytes.Add(pc.Length)
	select {
	case w.out <- newChunk{id: id, data: pc.Data}:
		return repo.Entry{Length: pc.Length, ID: id}, nil
	case <-ctx.Done():
		return repo.Entry{}, ctx.Err()
	}
}

// cutSegments processes the segments it receives: each is cut whole, cut
// only around its changes, or (unchanged) taken from the base snapshot.
// It saves each segment's page once the segment is done.
func (e *exporter) cutSegments(ctx context.Context, segs <-chan int64, out chan<- newChunk) error {
	c, err := chunk.NewCutter(e.p, chunk.Options{ReadSize: e.readSize(), Alloc: e.bufs.get})
	if err != nil {
		return err
	}
	w := &worker{e: e, cutter: c, hasher: e.st.NewHasher(), out: out}
	defer func() {
		s := c.Stats()
		e.mu.Lock()
		e.stages.Read += s.ReadTime
		e.stages.ZeroCheck += s.ZeroTime
		e.stages.Cut += s.CutTime
		e.stages.Hash += w.hashTime
		e.mu.Unlock()
	}()
	var entries []repo.Entry
	for seg := range segs {
		start, end := e.p.SegmentRange(e.size, seg)
		entries = entries[:0]
		before := c.Stats()
		var err error
		switch {
		case e.changes != nil && baseUsable(e.opts.Base, e.p, e.size, seg):
			spans := e.segmentChanges(start, end)
			if len(spans) == 0 {
				if e.opts.VerifyUnchanged > 0 {
					if err := w.verifyPage(ctx, seg); err != nil {
						return fmt.Errorf("export: segment %d: %w", seg, err)
					}
				} else {
					e.reusedBytes.Add(end - start)
				}
				e.pages[seg] = e.opts.Base.Pages[seg]
				e.doneBytes.Add(end - start)
				continue
			}
			entries, err = e.incrementalSegment(ctx, w, seg, spans, entries)
		default:
			err = c.Cut(ctx, e.src, start, end, func(pc chunk.Piece) error {
				en, err := w.add(ctx, pc)
				entries = append(entries, en)
				return err
			})
		}
		if err != nil {
			return fmt.Errorf("export: segment %d: %w", seg, err)
		}
		after := c.Stats()
		e.readBytes.Add(after.ReadBytes - before.ReadBytes)
		e.zeroBytes.Add(after.HoleBytes - before.HoleBytes)
		pid, err := e.st.SavePage(ctx, entries)
		if err != nil {
			return fmt.Errorf("export: saving page %d: %w", seg, err)
		}
		e.pages[seg] = pid // each worker writes distinct elements
		e.doneBytes.Add(end - start)
	}
	return nil
}

// segmentChanges returns the changes within [start, end), clipped.
func (e *exporter) segmentChanges(start, end int64) []span {
	i := sort.Search(len(e.changes), func(i int) bool { return e.changes[i].end > start })
	var out []span
	for ; i < len(e.changes) && e.changes[i].start < end; i++ {
		out = append(out, span{max(e.changes[i].start, start), min(e.changes[i].end, end)})
	}
	return out
}

// readSize is the cutter's read size: large for whole segments, small when
// only changes are read, so that reads end close to where cutting resyncs.
func (e *exporter) readSize() int {
	if e.opts.ReadSize > 0 {
		return e.opts.ReadSize
	}
	if e.changes != nil {
		return 128 << 10
	}
	return defaultReadSize
}

// pack compresses, seals and packs new chunks; full packs go to upload.
func (e *exporter) pack(ctx context.Context, in <-chan newChunk, out chan<- *repo.Pack) error {
	pk := e.st.NewPacker(e.opts.PackSize)
	defer func() {
		compress, seal := pk.Busy()
		e.mu.Lock()
		e.stages.Compress += compress
		e.stages.Encrypt += seal
		e.mu.Unlock()
	}()
	send := func(p *repo.Pack) error {
		if p == nil {
			return nil
		}
		select {
		case out <- p:
			return nil
		case <-ctx.Done():
			e.st.ReleasePack(p)
			return ctx.Err()
		}
	}
	for c := range in {
		_, err := pk.Add(repo.BlobData, c.id, c.data)
		e.bufs.put(c.data)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		var full *repo.Pack
		if pk.Full() {
			full, err = pk.Finish()
		}
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if err := send(full); err != nil {
			return err
		}
	}
	last, err := pk.Finish()
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return send(last)
}

func (e *exporter) upload(ctx context.Context, in <-chan *repo.Pack) error {
	var busy time.Duration
	defer func() {
		e.mu.Lock()
		e.stages.Upload += busy
		e.mu.Unlock()
	}()
	for p := range in {
		t := time.Now()
		err := e.st.SavePack(ctx, p)
		e.st.ReleasePack(p)
		busy += time.Since(t)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	return nil
}

// finish makes everything durable and writes the snapshot.
func (e *exporter) finish(ctx context.Context) error {
	if cu, ok := e.src.(interface{ CheckUnchanged() error }); ok {
		if err := cu.CheckUnchanged(); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	if err := e.storeDeferred(ctx); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := e.st.Flush(ctx); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := e.checkDeferred(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	host, _ := os.Hostname()
	s := &repo.Snapshot{
		Volume:      e.opts.Volume,
		Source:      e.opts.Source,
		Hostname:    host,
		Time:        time.Now().UTC(),
		Tags:        e.opts.Tags,
		Size:        e.size,
		SegmentSize: e.p.SegmentSize,
		Pages:       e.pages,
	}
	if e.opts.Base != nil {
		id := e.opts.Base.ID
		s.Parent = &id
	}
	s.Stats = repo.SnapshotStats{
		ReadBytes: e.readBytes.Load(), ZeroBytes: e.zeroBytes.Load(), NewBytes: e.newBytes.Load(),
		StoredBytes: e.st.WrittenBytes() - e.written0, Chunks: e.chunks.Load(), NewChunks: e.newChunks.Load(),
		Seconds: time.Since(e.start).Seconds(),
	}
	if err := e.st.SaveSnapshot(ctx, s); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	e.snapshot = s
	return nil
}

func (e *exporter) current() Progress {
	return Progress{
		Size: e.size, DoneBytes: e.doneBytes.Load(), ReadBytes: e.readBytes.Load(),
		ZeroBytes: e.zeroBytes.Load(), NewBytes: e.newBytes.Load(),
		StoredBytes: e.st.WrittenBytes() - e.written0, Elapsed: time.Since(e.start),
	}
}

// progress starts the progress reporter and returns a function that stops
// it after one last report.
func (e *exporter) progress(ctx context.Context) func() {
	return runProgress(ctx, e.opts.Progress, e.opts.ProgressInterval, e.current)
}

func runProgress(ctx context.Context, fn func(Progress), every time.Duration, cur func() Progress) func() {
	if fn == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				// Once everything is processed, only the final report
				// remains (after flushing), so the last line is printed once.
				if p := cur(); p.DoneBytes < p.Size {
					fn(p)
				}
			case <-stop:
				fn(cur())
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}

func (e *exporter) result() *ExportResult {
	s := e.snapshot
	return &ExportResult{
		Snapshot: s, Size: e.size,
		ReadBytes: s.Stats.ReadBytes, ZeroBytes: s.Stats.ZeroBytes, NewBytes: s.Stats.NewBytes,
		StoredBytes: s.Stats.StoredBytes, Chunks: s.Stats.Chunks, NewChunks: s.Stats.NewChunks,
		ReusedBytes:    e.reusedBytes.Load(),
		DeferredChunks: int64(len(e.deferred)), ReclaimedChunks: e.reclaimed.Load(),
		Duration: time.Since(e.start), Stages: e.stages,
	}
}
