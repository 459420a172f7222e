package repo

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo/backend"
)

// Snapshot summaries (FORMAT.md, "Snapshot summaries"): beside every
// snapshot file snapshots/<id>, a small sealed object summaries/<id> holds
// everything of the snapshot but its page list, so that listing, retention
// and "latest" read a few hundred bytes per snapshot instead of the whole
// page list (1 MB for a dense 1 TiB volume). The snapshot file stays the
// truth: a summary is written after its snapshot file, removed after it,
// and a snapshot without a usable summary is read from its file.

const (
	summaryPrefix  = "summaries/"
	summaryVersion = 1
	// aadSummary is followed by the snapshot ID in hex, so that a summary
	// cannot be passed off as another snapshot's.
	aadSummary = "blockmover snapshot summary v1 "
	// summaryReaders bounds the summaries (and snapshot files) read at
	// once: over S3 a listing of 10,000 snapshots is latency-bound.
	summaryReaders = 32
)

func summaryKey(id ID) string { return summaryPrefix + id.String() }

// summaryFile is the plaintext of a summary object.
type summaryFile struct {
	Version int `json:"version"`
	// FileSize is the byte length of the snapshot file: a listing
	// compares it with the file's listed size and reads the file itself
	// on a mismatch.
	FileSize int64 `json:"file_size"`
	// Snapshot is the snapshot's JSON with "pages" null.
	Snapshot json.RawMessage `json:"snapshot"`
}

// encodeSummary returns the summary object of s, whose snapshot file is
// fileSize bytes long.
func (r *Repository) encodeSummary(s *Snapshot, fileSize int64) ([]byte, error) {
	c := *s
	c.Pages = nil
	snap, err := json.Marshal(&c)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(summaryFile{Version: summaryVersion, FileSize: fileSize, Snapshot: snap})
	if err != nil {
		return nil, err
	}
	return seal(r.aead, nil, plain, []byte(aadSummary+s.ID.String())), nil
}

// decodeSummary checks and decodes summary object data of snapshot id. It
// returns the snapshot without its pages and the size of its file. Every
// error it returns means the summary is damaged.
func (r *Repository) decodeSummary(id ID, data []byte) (*Snapshot, int64, error) {
	plain, err := open(r.aead, nil, data, []byte(aadSummary+id.String()))
	if err != nil {
		return nil, 0, fmt.Errorf("summary of snapshot %s: %w", id.Short(), err)
	}
	var f summaryFile
	if err := json.Unmarshal(plain, &f); err != nil {
		return nil, 0, fmt.Errorf("summary of snapshot %s: %w: %w", id.Short(), errFormat, err)
	}
	if f.Version != summaryVersion {
		return nil, 0, fmt.Errorf("summary of snapshot %s: %w: version %d", id.Short(), errFormat, f.Version)
	}
	var s Snapshot
	if err := json.Unmarshal(f.Snapshot, &s); err != nil {
		return nil, 0, fmt.Errorf("summary of snapshot %s: %w: %w", id.Short(), errFormat, err)
	}
	if s.Pages != nil || s.Size < 0 || s.SegmentSize <= 0 || f.FileSize <= 0 {
		return nil, 0, fmt.Errorf("summary of snapshot %s: %w: size %d, segment size %d, file size %d", id.Short(), errFormat, s.Size, s.SegmentSize, f.FileSize)
	}
	s.ID = id
	return &s, f.FileSize, nil
}

// saveSummary writes the summary of snapshot s (s.ID set), whose file is
// fileSize bytes. A summary that exists already is left as it is: it was
// written from the same snapshot file.
func (r *Repository) saveSummary(ctx context.Context, s *Snapshot, fileSize int64) error {
	data, err := r.encodeSummary(s, fileSize)
	if err != nil {
		return err
	}
	if err := r.put(ctx, summaryKey(s.ID), data); err != nil && !errors.Is(err, backend.ErrExists) {
		return fmt.Errorf("saving the summary of snapshot %s: %w", s.ID.Short(), err)
	}
	return nil
}

// deleteSummary removes the summary of snapshot id; a missing one is no
// error.
func (r *Repository) deleteSummary(ctx context.Context, id ID) error {
	if err := r.be.Delete(ctx, summaryKey(id)); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return fmt.Errorf("deleting the summary of snapshot %s: %w", id.Short(), err)
	}
	return nil
}

// SummaryProblem is a summary object that a listing could not use: damaged
// (fails authentication or does not decode) or disagreeing with its
// snapshot file. The listing read the snapshot file instead.
type SummaryProblem struct {
	ID  ID // the snapshot's
	Err error
}

// Key returns the summary's backend key.
func (p SummaryProblem) Key() string { return summaryKey(p.ID) }

func (p SummaryProblem) Error() string { return fmt.Sprintf("%s: %v", p.Key(), p.Err) }

func (p SummaryProblem) Unwrap() error { return p.Err }

// SnapshotList is what ReadSummaries found.
type SnapshotList struct {
	// Snapshots are the readable snapshots, oldest first (ties by ID),
	// without their page lists: Pages is nil. LoadSnapshot reads one in
	// full.
	Snapshots []*Snapshot
	// Damaged are the snapshot files that have no usable summary and are
	// damaged themselves, by ID.
	Damaged []UnreadableSnapshot
	// Unsummarized are the snapshots that have no summary yet (written
	// by a mover before summaries, or by a write killed between its
	// snapshot and its summary): they were read from their files, and the
	// next write summarizes them (MigrateSummaries).
	Unsummarized []ID
	// BadSummaries are the summaries that were damaged or disagreed with
	// their snapshot file; the snapshot was read from its file instead.
	BadSummaries []SummaryProblem
}

// listSummaries returns the IDs of the snapshots that have a summary.
func (r *Repository) listSummaries(ctx context.Context) (map[ID]bool, error) {
	have := map[ID]bool{}
	err := r.be.List(ctx, summaryPrefix, func(oi backend.ObjectInfo) error {
		if id, err := ParseID(strings.TrimPrefix(oi.Key, summaryPrefix)); err == nil {
			have[id] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing snapshot summaries: %w", err)
	}
	return have, nil
}

// listSnapshotFiles returns the snapshot files and their sizes.
func (r *Repository) listSnapshotFiles(ctx context.Context) (map[ID]int64, error) {
	files := map[ID]int64{}
	err := r.be.List(ctx, snapshotPrefix, func(oi backend.ObjectInfo) error {
		if id, err := ParseID(strings.TrimPrefix(oi.Key, snapshotPrefix)); err == nil {
			files[id] = oi.Size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing snapshots: %w", err)
	}
	return files, nil
}

// ReadSummaries lists every snapshot without its page list: from its
// summary where it has a usable one, from its snapshot file otherwise
// (reported in the result). It reads the summaries in parallel and holds
// no page list, so its memory is a few hundred bytes per snapshot. A
// snapshot deleted while it is being listed is left out. The error is for
// what is not damage: a listing or a read failing.
//
// A summary is trusted for everything it records; a snapshot file damaged
// in place (its size unchanged) is therefore found by reading it:
// LoadSnapshot, mover check.
func (r *Repository) ReadSummaries(ctx context.Context) (*SnapshotList, error) {
	// The summaries first, then the snapshots: a summary is written after
	// its snapshot, so every listed summary of a live snapshot has its
	// snapshot in the second listing.
	have, err := r.listSummaries(ctx)
	if err != nil {
		return nil, err
	}
	files, err := r.listSnapshotFiles(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]ID, 0, len(files))
	for id := range files {
		ids = append(ids, id)
	}
	type result struct {
		s       *Snapshot
		damaged error // the snapshot file
		bad     error // the summary
		noSum   bool
	}
	res := make([]result, len(ids))
	g, gctx := safego.WithContext(ctx)
	g.SetLimit(summaryReaders)
	for i, id := range ids {
		g.Go(func() error {
			out := &res[i]
			if have[id] {
				s, err := r.readSummary(gctx, id, files[id])
				switch {
				case err == nil:
					out.s = s
					return nil
				case errors.Is(err, backend.ErrNotFound):
					out.noSum = true // forgotten meanwhile, or removed: read the file
				case isDamage(err):
					out.bad = err
				default:
					return err
				}
			} else {
				out.noSum = true
			}
			s, err := r.LoadSnapshot(gctx, id)
			switch {
			case errors.Is(err, backend.ErrNotFound):
				out.bad, out.noSum = nil, false // forgotten meanwhile
			case err != nil && isDamage(err):
				out.damaged = err
			case err != nil:
				return err
			default:
				s.Pages = nil
				out.s = s
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	list := &SnapshotList{}
	for i, x := range res {
		if x.s != nil {
			list.Snapshots = append(list.Snapshots, x.s)
		}
		if x.damaged != nil {
			list.Damaged = append(list.Damaged, UnreadableSnapshot{ID: ids[i], Err: x.damaged})
		}
		if x.bad != nil {
			list.BadSummaries = append(list.BadSummaries, SummaryProblem{ID: ids[i], Err: x.bad})
		}
		if x.noSum {
			list.Unsummarized = append(list.Unsummarized, ids[i])
		}
	}
	sortSnapshots(list.Snapshots)
	slices.SortFunc(list.Damaged, func(a, b UnreadableSnapshot) int { return cmp.Compare(a.ID.String(), b.ID.String()) })
	slices.SortFunc(list.BadSummaries, func(a, b SummaryProblem) int { return cmp.Compare(a.ID.String(), b.ID.String()) })
	slices.SortFunc(list.Unsummarized, func(a, b ID) int { return cmp.Compare(a.String(), b.String()) })
	return list, nil
}

// errSummaryMismatch: a summary that does not describe its snapshot file.
var errSummaryMismatch = errors.New("does not match its snapshot file")

// readSummary reads and decodes the summary of snapshot id, whose file
// the listing found fileSize bytes long.
func (r *Repository) readSummary(ctx context.Context, id ID, fileSize int64) (*Snapshot, error) {
	data, err := backend.ReadAll(ctx, r.be, summaryKey(id), 0, -1)
	if err != nil {
		return nil, fmt.Errorf("reading the summary of snapshot %s: %w", id.Short(), err)
	}
	s, size, err := r.decodeSummary(id, data)
	if err != nil {
		return nil, err
	}
	if size != fileSize {
		return nil, fmt.Errorf("summary of snapshot %s: %w: %w (records %d bytes, the file has %d)", id.Short(), errFormat, errSummaryMismatch, size, fileSize)
	}
	return s, nil
}

// isDamage reports whether err, from reading a snapshot or summary,
// means the object is damaged rather than unreachable.
func isDamage(err error) bool {
	return errors.Is(err, ErrAuth) || errors.Is(err, errFormat)
}

// sortSnapshots sorts oldest first, ties by ID.
func sortSnapshots(snaps []*Snapshot) {
	slices.SortFunc(snaps, func(a, b *Snapshot) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.ID.String(), b.ID.String())
	})
}

// MigrateStats is what MigrateSummaries did.
type MigrateStats struct {
	Written int // summaries written for snapshots that had none
	Removed int // summaries removed whose snapshot is gone
}

// MigrateSummaries brings the repository to the summaries format: it
// writes a summary for every snapshot file that has none (a damaged file
// gets none: it stays a damaged snapshot), and removes every summary whose
// snapshot file is gone (a forget killed between its two deletes). Each
// step is one create-only put or one delete, so a run killed at any point
// leaves a valid repository, which readers list correctly (reading the
// unsummarized snapshots from their files), and the next run finishes the
// work. Writers call it after their writes (SaveSnapshot, Forget, GC);
// its cost when there is nothing to do is two listings.
func (r *Repository) MigrateSummaries(ctx context.Context) (MigrateStats, error) {
	var st MigrateStats
	have, err := r.listSummaries(ctx) // first: see ReadSummaries
	if err != nil {
		return st, err
	}
	files, err := r.listSnapshotFiles(ctx)
	if err != nil {
		return st, err
	}
	var todo []ID
	for id := range files {
		if !have[id] {
			todo = append(todo, id)
		}
	}
	var orphans []ID
	for id := range have {
		if _, ok := files[id]; !ok {
			orphans = append(orphans, id)
		}
	}
	written := make([]bool, len(todo))
	g, gctx := safego.WithContext(ctx)
	g.SetLimit(summaryReaders)
	for i, id := range todo {
		g.Go(func() error {
			ok, err := r.summarize(gctx, id)
			written[i] = ok
			return err
		})
	}
	for _, id := range orphans {
		g.Go(func() error { return r.deleteSummary(gctx, id) })
	}
	err = g.Wait()
	for _, w := range written {
		if w {
			st.Written++
		}
	}
	if err == nil {
		st.Removed = len(orphans)
	}
	if err != nil {
		return st, fmt.Errorf("migrating to snapshot summaries: %w", err)
	}
	return st, nil
}

// summarize writes the summary of snapshot id from its file. A damaged or
// vanished file gets none (false, nil).
func (r *Repository) summarize(ctx context.Context, id ID) (bool, error) {
	data, err := backend.ReadAll(ctx, r.be, snapshotPrefix+id.String(), 0, -1)
	if errors.Is(err, backend.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading snapshot %s: %w", id.Short(), err)
	}
	s, err := r.decodeSnapshot(id, data)
	if err != nil {
		return false, nil // damaged: check and repair report it
	}
	if err := r.saveSummary(ctx, s, int64(len(data))); err != nil {
		return false, err
	}
	return true, nil
}

// RepairSummaries rewrites every summary that ReadSummaries could not use
// (damaged, or disagreeing with its snapshot file), then migrates
// (MigrateSummaries). A rewrite deletes the bad summary before it writes
// the new one: killed in between, the snapshot is only unsummarized,
// which the next write repairs.
func (r *Repository) RepairSummaries(ctx context.Context) (rewritten int, err error) {
	list, err := r.ReadSummaries(ctx)
	if err != nil {
		return 0, err
	}
	for _, p := range list.BadSummaries {
		if err := r.deleteSummary(ctx, p.ID); err != nil {
			return rewritten, err
		}
		ok, err := r.summarize(ctx, p.ID)
		if err != nil {
			return rewritten, err
		}
		if ok {
			rewritten++
		}
	}
	_, err = r.MigrateSummaries(ctx)
	return rewritten, err
}

// resolveLatest returns the newest readable snapshot (of volume vol if
// byVol), choosing by the summaries and reading only the chosen file. A
// chosen file that turns out damaged joins the skipped ones and the next
// newest is tried.
func (r *Repository) resolveLatest(ctx context.Context, vol string, byVol bool) (*Snapshot, []UnreadableSnapshot, error) {
	list, err := r.ReadSummaries(ctx)
	if err != nil {
		return nil, nil, err
	}
	skipped := list.Damaged
	for i := len(list.Snapshots) - 1; i >= 0; i-- {
		sum := list.Snapshots[i]
		if byVol && sum.Volume != vol {
			continue
		}
		s, err := r.LoadSnapshot(ctx, sum.ID)
		switch {
		case err == nil:
			return s, skipped, nil
		case errors.Is(err, backend.ErrNotFound):
			continue // forgotten since the listing
		case isDamage(err):
			skipped = append(skipped, UnreadableSnapshot{ID: sum.ID, Err: err})
			continue
		default:
			return nil, nil, err
		}
	}
	what, why := "snapshot", ""
	if len(skipped) > 0 {
		what, why = "readable snapshot", fmt.Sprintf(" (%d snapshot files are damaged)", len(skipped))
	}
	if byVol {
		return nil, skipped, fmt.Errorf("%w: no %s of volume %q%s", ErrSnapshotNotFound, what, vol, why)
	}
	return nil, skipped, fmt.Errorf("%w: the repository has no %ss%s", ErrSnapshotNotFound, what, why)
}

// sameSummary reports whether summary sum describes snapshot s: every
// field but the page list is equal.
func sameSummary(sum, s *Snapshot) bool {
	a, b := *sum, *s
	a.Pages, b.Pages = nil, nil
	ja, err1 := json.Marshal(&a)
	jb, err2 := json.Marshal(&b)
	return err1 == nil && err2 == nil && string(ja) == string(jb) && a.ID == b.ID
}

// eachSnapshot reads the snapshot files ids, workers at once, and calls fn
// with each (or with the error reading it) from the calling goroutine, in
// the order the reads finish: gc marks serially while the reads overlap.
// At most 2·workers snapshots are in memory at once. An error from fn
// stops the reads and is returned.
func (r *Repository) eachSnapshot(ctx context.Context, ids []ID, workers int, fn func(id ID, s *Snapshot, err error) error) error {
	type loaded struct {
		id  ID
		s   *Snapshot
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make(chan loaded, workers)
	todo := make(chan ID)
	g, gctx := safego.WithContext(ctx)
	g.Go(func() error {
		defer close(todo)
		for _, id := range ids {
			select {
			case todo <- id:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for range workers {
		g.Go(func() error {
			for id := range todo {
				s, err := r.LoadSnapshot(gctx, id)
				select {
				case out <- loaded{id, s, err}:
				case <-gctx.Done():
					return nil
				}
			}
			return nil
		})
	}
	go func() { _ = g.Wait(); close(out) }()
	var first error
	for l := range out {
		if first != nil {
			continue // drain
		}
		if err := fn(l.id, l.s, l.err); err != nil {
			first = err
			cancel()
		}
	}
	if first != nil {
		return first
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// pageBatch bounds the pages eachPages holds at once.
const pageBatch = 256

// eachPages loads the pages idx of snapshot s, workers at once (each with
// its own BlobOpener), and calls fn with each page's entries or the error
// loading it, from the calling goroutine, in idx order, holding at most
// pageBatch pages. An error from fn stops it and is returned.
func (r *Repository) eachPages(ctx context.Context, s *Snapshot, idx []int, workers int, fn func(i int, entries []Entry, err error) error) error {
	if len(idx) == 0 {
		return nil
	}
	workers = min(workers, len(idx))
	openers := make(chan *BlobOpener, workers)
	for range workers {
		openers <- r.NewBlobOpener()
	}
	for len(idx) > 0 {
		batch := idx[:min(len(idx), pageBatch)]
		idx = idx[len(batch):]
		pages := make([][]Entry, len(batch))
		errs := make([]error, len(batch))
		g, gctx := safego.WithContext(ctx)
		g.SetLimit(workers)
		for k, i := range batch {
			g.Go(func() error {
				o := <-openers
				defer func() { openers <- o }()
				pages[k], errs[k] = r.LoadPage(gctx, o, s, i)
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		for k, i := range batch {
			if err := fn(i, pages[k], errs[k]); err != nil {
				return err
			}
		}
	}
	return nil
}
