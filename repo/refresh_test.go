package repo

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/repo/backend"
)

// saveBlob stores one random blob in a pack of its own through r's write
// path and returns its ID and pack.
func saveBlob(t *testing.T, r *Repository) (ID, ID) {
	t.Helper()
	ctx := context.Background()
	data := randBytes(10_000)
	id := r.NewHasher().Sum(data)
	if !r.Reserve(id) {
		t.Fatal("a random blob is already stored")
	}
	pk := r.NewPacker(0)
	if _, err := pk.Add(BlobData, id, data); err != nil {
		t.Fatal(err)
	}
	p, err := pk.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SavePack(ctx, p); err != nil {
		t.Fatal(err)
	}
	return id, p.ID
}

// dueNow lets r's next refresh run at once.
func dueNow(r *Repository) {
	f := r.refresherOf()
	f.mu.Lock()
	f.next = f.next.AddDate(-1, 0, 0)
	f.mu.Unlock()
}

// TestRefreshSeesOtherWriter: a writer that opened before another wrote a
// blob deduplicates against it once the other published its first pack,
// and then finishes its packs sooner.
func TestRefreshSeesOtherWriter(t *testing.T) {
	_, be := newTestRepo(t)
	a, b := reopen(t, be, Options{}), reopen(t, be, Options{})
	id, _ := saveBlob(t, a) // its first pack: published at once
	dueNow(b)
	if b.Reserve(id) {
		t.Fatal("b would store a blob that a published")
	}
	if b.RefreshedPacks() != 1 {
		t.Fatalf("b took %d packs from a's index file, want 1", b.RefreshedPacks())
	}
	if got, want := b.packTarget(16<<20), 4<<20; got != want {
		t.Errorf("pack target beside another writer %d, want %d", got, want)
	}
	if got := a.packTarget(16 << 20); got != 16<<20 {
		t.Errorf("a, which saw no other writer, finishes packs at %d", got)
	}
	// b's own index file is not taken for another writer's.
	saveBlob(t, b)
	dueNow(b)
	if b.Reserve(randID()) != true || b.RefreshedPacks() != 1 {
		t.Errorf("b refreshed its own index file: %d packs", b.RefreshedPacks())
	}
}

func randID() ID {
	var id ID
	copy(id[:], randBytes(len(id)))
	return id
}

// TestRefreshCondemned: a pack that a gc state condemns is never
// deduplicated against, also when the state is newer than the writer's
// open, and a pack that does not exist is never added.
func TestRefreshCondemned(t *testing.T) {
	ctx := context.Background()
	_, be := newTestRepo(t)
	a, b := reopen(t, be, Options{}), reopen(t, be, Options{})
	id, pack := saveBlob(t, a)
	if err := (&gc{r: a}).saveState(ctx, []ID{pack}); err != nil {
		t.Fatal(err)
	}
	dueNow(b)
	if !b.Reserve(id) {
		t.Error("b deduplicates against a condemned pack")
	}
	// A pack deleted after its index file was written is left out.
	id2, pack2 := saveBlob(t, a)
	if err := be.Delete(ctx, PackKey(pack2)); err != nil {
		t.Fatal(err)
	}
	dueNow(b)
	if !b.Reserve(id2) {
		t.Error("b deduplicates against a pack that does not exist")
	}
	if _, ok := b.Lookup(id2); ok {
		t.Error("b indexed a pack that does not exist")
	}
	// Condemned after b learnt the pack: no longer deduplicated against.
	id3, pack3 := saveBlob(t, a)
	dueNow(b)
	if b.Reserve(id3) {
		t.Fatal("b would store a blob that a published")
	}
	if err := (&gc{r: a}).saveState(ctx, []ID{pack, pack3}); err != nil {
		t.Fatal(err)
	}
	dueNow(b)
	b.Reserve(randID())
	if b.Has(id3) {
		t.Error("b still deduplicates against a pack condemned since it learnt it")
	}
}

// TestNoRefreshUnderLease: a Repository that took the maintenance lease
// never refreshes (gc's mark relies on index positions).
func TestNoRefreshUnderLease(t *testing.T) {
	ctx := context.Background()
	_, be := newTestRepo(t)
	a, b := reopen(t, be, Options{}), reopen(t, be, Options{})
	l, err := b.AcquireLease(ctx, LeaseOptions{Purpose: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	saveBlob(t, b) // gc's repack saves packs under the lease
	id, _ := saveBlob(t, a)
	dueNow(b)
	if !b.Reserve(id) || b.RefreshedPacks() != 0 {
		t.Error("a Repository holding the lease refreshed its index")
	}
	// A reload does not turn refreshes back on.
	if err := b.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if !b.refresherOf().isOff() {
		t.Error("LoadIndex turned refreshes back on under the lease")
	}
}

// TestLeaseBeforeLoad: a Repository opened without its index that takes
// the lease (gc, repair) saves packs and index files as before.
func TestLeaseBeforeLoad(t *testing.T) {
	ctx := context.Background()
	_, be := newTestRepo(t)
	r := reopen(t, be, Options{NoIndex: true})
	l, err := r.AcquireLease(ctx, LeaseOptions{Purpose: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	saveBlob(t, r)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(r.writtenIndexFiles()); n != 1 {
		t.Errorf("%d index files written, want 1", n)
	}
}

// failingList fails listings of the index once fail is set.
type failingList struct {
	backend.Backend
	fail atomic.Bool
}

func (f *failingList) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	if f.fail.Load() && prefix == indexPrefix {
		return errors.New("injected listing failure")
	}
	return f.Backend.List(ctx, prefix, fn)
}

// TestRefreshFailureIsAWarning: a refresh that fails costs deduplication,
// not the export: SavePack succeeds and one warning says why.
func TestRefreshFailureIsAWarning(t *testing.T) {
	_, mem := newTestRepo(t)
	be := &failingList{Backend: mem}
	r := reopen(t, be, Options{})
	be.fail.Store(true)
	for range 3 {
		saveBlob(t, r)
		dueNow(r)
	}
	ws := r.Warnings()
	if len(ws) != 1 || !strings.Contains(ws[0].Error(), "injected listing failure") {
		t.Fatalf("warnings %v, want one naming the failed refresh", ws)
	}
}
