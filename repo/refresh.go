package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
)

// Writers that see each other. Several exports into one repository at once
// deduplicate against each other through index files: a writer publishes
// its index sooner once it has seen another writer (see publishDue), and
// every writer re-reads, between packs, the index files that appeared
// since it last looked (see refreshIndex), so that a blob another writer
// stored a moment ago is not stored again. What a writer has reserved but
// not yet indexed (its open packs, the upload queue, the publish delay)
// it announces in claim objects (claims.go): each refresh first reads the
// other writers' claims, then the index files, and a blob another live
// writer claims is deferred rather than stored (ReserveShared), then
// found in the index, or stored after all, before the snapshot
// (AwaitDeferred). Seeing another writer's claim object counts as seeing
// another writer.
//
// A refresh only adds packs that exist (it stats each new one) and learns
// the newest gc state after the index files, so a pack that a gc condemned
// before compacting the index file that names it is known as condemned
// before it is added (gc writes its state, then the index files, FORMAT.md
// "Garbage collection"): a writer never deduplicates against it. A
// Repository that took the maintenance lease never refreshes: gc's mark
// relies on index positions that an add would shift.

// Refresh policy.
const (
	// refreshEvery is the least time between two refreshes; after a
	// refresh that took d (a listing, and the new files read), the next
	// waits refreshCost×d if that is longer, so that refreshing costs at
	// most a tenth of a writer's time however large the repository.
	// After its first backoffAfter, each refresh in a row that finds
	// nothing new doubles the wait, up to refreshEvery<<refreshBackoff
	// (1.6 s): a lone writer lists little, and writers that start
	// together find each other at once.
	refreshEvery   = 50 * time.Millisecond
	refreshCost    = 10
	refreshBackoff = 5
	backoffAfter   = 10 * time.Second
	// refreshTimeout bounds a refresh that Reserve runs (it has no
	// context of its caller).
	refreshTimeout = time.Minute
	// publishEvery: a writer that has seen no other writer still
	// publishes its index at least this often, and after its 1st, 2nd,
	// 4th, ... pack up to every IndexCheckpoint packs: writers that start
	// together see each other after a pack, and a lone writer writes a
	// few more index files than IndexCheckpoint alone would.
	publishEvery = 30 * time.Second
	// publishGap: beside other writers, index files at most this often
	// (at most 36,000 an hour a writer, merged by gc's compaction).
	publishGap = 100 * time.Millisecond
	// othersFor is how long a writer keeps publishing at every pack, and
	// finishing packs at a sharedPackDiv'th of their target size, after it
	// last saw another writer's new index file: what a writer holds in
	// packs not yet published is what others cannot deduplicate against.
	othersFor     = time.Minute
	sharedPackDiv = 4
)

// refresher is the state of the index refresh of a Repository that loaded
// its index.
type refresher struct {
	run sync.Mutex // one refresh at a time

	mu        sync.Mutex
	off       bool            // never again: the maintenance lease was taken
	seen      map[string]bool // index files in the index (or damaged)
	gcState   string          // the newest gc state known
	next      time.Time       // no refresh before
	others    time.Time       // another writer's new index file last appeared
	published time.Time       // this writer's last index file
	step      int             // packs before the next index file (see publishEvery)
	added     int             // packs added by refreshes
	warned    bool            // a refresh failed (see maybeRefresh)
	idle      int             // refreshes in a row that found no new index file
	loaded    time.Time       // when LoadIndex enabled refreshes

	claims *claims // see claims.go
}

// startRefresh enables refreshes after a LoadIndex that read files.
func (r *Repository) startRefresh(files []string, damaged []Problem, gcState string) {
	seen := make(map[string]bool, len(files)+len(damaged))
	for _, f := range files {
		seen[f] = true
	}
	for _, p := range damaged {
		seen[p.Object] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refresh != nil && r.refresh.isOff() {
		return
	}
	now := time.Now()
	r.refresh = &refresher{seen: seen, gcState: gcState, published: now, loaded: now, step: 1, claims: newClaims()}
}

// stopRefresh disables refreshes for good (see AcquireLease).
func (r *Repository) stopRefresh() {
	r.mu.Lock()
	f := r.refresh
	if f == nil {
		f = &refresher{}
		r.refresh = f
	}
	r.mu.Unlock()
	f.mu.Lock()
	f.off = true
	f.mu.Unlock()
}

func (f *refresher) isOff() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.off
}

func (r *Repository) refresherOf() *refresher {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refresh
}

// RefreshedPacks returns how many packs of other writers' index files the
// refreshes added to the index since it was loaded.
func (r *Repository) RefreshedPacks() int {
	f := r.refresherOf()
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.added
}

// publishDue reports whether SavePack should write an index file for its n
// unindexed packs now: every IndexCheckpoint packs, and, when refreshes
// run, after the 1st, 2nd, 4th, ... pack, every publishEvery, and at every
// pack (at most every publishGap) while other writers are seen.
func (r *Repository) publishDue(n int) bool {
	if n >= IndexCheckpoint {
		return true
	}
	f := r.refresherOf()
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.off {
		return false
	}
	since := time.Since(f.published)
	return n >= f.step || since >= publishEvery || time.Since(f.others) < othersFor && since >= publishGap
}

// published records an index file this writer wrote.
func (r *Repository) published(key string) {
	f := r.refresherOf()
	if f == nil {
		return
	}
	f.mu.Lock()
	if f.seen != nil { // nil if refreshes were stopped before any load
		f.seen[key] = true
	}
	f.published = time.Now()
	f.step = min(2*f.step, IndexCheckpoint)
	f.mu.Unlock()
}

// reserveRefresh refreshes the index, if it is due, before Reserve
// decides that a blob is new.
func (r *Repository) reserveRefresh() {
	if f := r.refresherOf(); f == nil || !f.due() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
	defer cancel()
	r.maybeRefresh(ctx)
}

func (f *refresher) due() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.off && !time.Now().Before(f.next)
}

// maybeRefresh refreshes the index if it is due and no refresh runs. A
// refresh is best effort: failing costs only deduplication, so its first
// error becomes a warning (see Warnings), never the caller's error.
func (r *Repository) maybeRefresh(ctx context.Context) {
	f := r.refresherOf()
	if f == nil || !f.due() || !f.run.TryLock() {
		return
	}
	defer f.run.Unlock()
	start := time.Now()
	err := r.refreshIndex(ctx, f)
	f.mu.Lock()
	f.next = time.Now().Add(max(refreshEvery<<min(f.idle, refreshBackoff), refreshCost*time.Since(start)))
	warn := err != nil && ctx.Err() == nil && !f.warned
	f.warned = f.warned || warn
	f.mu.Unlock()
	if warn {
		r.warn(fmt.Errorf("re-reading the index for other writers' blobs: %w (exports running at once may store the same data twice)", err))
	}
}

// refreshNow refreshes the index now, waiting for a refresh that runs.
func (r *Repository) refreshNow(ctx context.Context) error {
	f := r.refresherOf()
	if f == nil || f.isOff() {
		return nil
	}
	f.run.Lock()
	defer f.run.Unlock()
	return r.refreshIndex(ctx, f)
}

// refreshIndex publishes this writer's claims, reads the others' (in that
// order: see claims.go), and adds to the index the packs of the index
// files that appeared since the last look. Caller holds f.run.
func (r *Repository) refreshIndex(ctx context.Context, f *refresher) error {
	claimErr := r.refreshClaims(ctx, f.claims)
	if f.claims != nil {
		f.claims.mu.Lock()
		active := f.claims.active()
		f.claims.mu.Unlock()
		if active {
			f.mu.Lock()
			f.others = time.Now()
			f.idle = 0
			r.othersSeen.Store(f.others.UnixNano())
			f.mu.Unlock()
		}
	}
	listed := time.Now()
	if err := r.refreshIndexFiles(ctx, f); err != nil {
		return err
	}
	f.claims.purgeReleased(listed)
	return claimErr
}

// refreshIndexFiles adds to the index the packs of the index files that
// appeared since the last look. Caller holds f.run.
func (r *Repository) refreshIndexFiles(ctx context.Context, f *refresher) error {
	infos, err := r.listIndexInfos(ctx)
	if err != nil {
		return err
	}
	var recs []indexPack
	var names []string
	for _, oi := range infos {
		f.mu.Lock()
		seen := f.seen[oi.Key]
		f.mu.Unlock()
		if seen {
			continue
		}
		packs, err := r.readIndexFile(ctx, oi.Key)
		switch {
		case errors.Is(err, backend.ErrNotFound):
			continue // replaced by gc's compaction: its packs are in another
		case damage(err):
			names = append(names, oi.Key) // skipped, as LoadIndex does
			continue
		case err != nil:
			return err
		}
		names = append(names, oi.Key)
		recs = append(recs, packs...)
	}
	// The gc state after the index files: a pack condemned before an
	// index file that names it was written is known condemned before
	// it is added (and packs condemned since the last look are no longer
	// deduplicated against).
	if err := r.refreshCondemned(ctx, f); err != nil {
		return err
	}
	if len(names) == 0 {
		f.mu.Lock()
		if time.Since(f.loaded) >= backoffAfter {
			f.idle++
		}
		f.mu.Unlock()
		return nil
	}
	added := 0
	for _, p := range recs {
		if r.idx.knows(p.ID) {
			continue
		}
		oi, err := r.be.Stat(ctx, PackKey(p.ID))
		if errors.Is(err, backend.ErrNotFound) {
			continue // deleted by gc since: its blobs are left out
		}
		if err != nil {
			return fmt.Errorf("reading pack %s: %w", p.ID.Short(), err)
		}
		r.idx.add(p.ID, p.Key, oi.ModTime, p.Blobs)
		added++
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range names {
		f.seen[n] = true
	}
	f.idle = 0
	f.others = time.Now()
	r.othersSeen.Store(f.others.UnixNano())
	f.added += added
	return nil
}

// refreshCondemned marks condemned the packs of a gc state newer than the
// one known.
func (r *Repository) refreshCondemned(ctx context.Context, f *refresher) error {
	key, condemned, err := r.newestGCState(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	known := f.gcState
	f.mu.Unlock()
	if key == "" || key == known {
		return nil
	}
	r.idx.condemn(condemned)
	f.mu.Lock()
	f.gcState = key
	f.mu.Unlock()
	return nil
}

// newestGCState returns the newest gc state's key and the packs it
// condemns ("" and none if there is none): each run lists every pack
// unreferenced at that run, so the newest state is the current view; a
// pack that older states listed but the newest does not was found
// referenced again, and is usable.
func (r *Repository) newestGCState(ctx context.Context) (string, []ID, error) {
	for {
		var newest backend.ObjectInfo
		if err := r.be.List(ctx, gcPrefix, func(oi backend.ObjectInfo) error {
			if newest.Key == "" || oi.ModTime.After(newest.ModTime) || oi.ModTime.Equal(newest.ModTime) && oi.Key > newest.Key {
				newest = oi
			}
			return nil
		}); err != nil {
			return "", nil, fmt.Errorf("listing gc states: %w", err)
		}
		if newest.Key == "" {
			return "", nil, nil
		}
		st, err := r.readGCState(ctx, newest.Key)
		if errors.Is(err, backend.ErrNotFound) {
			continue // pruned meanwhile: a newer one exists
		}
		if err != nil {
			return "", nil, err
		}
		return newest.Key, st.Condemned, nil
	}
}

// packTarget is the size at which a Packer of target bytes finishes a
// pack: a sharedPackDiv'th of it (and at least MinPackSize) while other
// writers are seen, so that they see this one's blobs sooner.
func (r *Repository) packTarget(target int) int {
	if t := r.othersSeen.Load(); t != 0 && time.Since(time.Unix(0, t)) < othersFor {
		return max(target/sharedPackDiv, min(target, MinPackSize))
	}
	return target
}
