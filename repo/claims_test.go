package repo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
)

func TestClaimsEncoding(t *testing.T) {
	for _, n := range []int{0, 1, 3, 1000} {
		ids := make([]ID, n)
		for i := range ids {
			ids[i] = randID()
		}
		got, err := decodeClaims(encodeClaims(ids))
		if err != nil || len(got) != n || !slices.Equal(got, ids) {
			t.Fatalf("%d ids: decoded %d, %v", n, len(got), err)
		}
	}
	good := encodeClaims([]ID{randID(), randID()})
	for name, b := range map[string][]byte{
		"empty": nil, "version": append([]byte{2}, good[1:]...),
		"short": good[:len(good)-1], "long": append(slices.Clone(good), 0),
		"huge count": {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		if _, err := decodeClaims(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func FuzzDecodeClaims(f *testing.F) {
	f.Add(encodeClaims(nil))
	f.Add(encodeClaims([]ID{{1}, {2}}))
	f.Add([]byte{1, 0x80})
	f.Add([]byte{1, 0x80, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := decodeClaims(b)
		if err != nil {
			return
		}
		enc := encodeClaims(ids)
		if !bytes.Equal(enc[len(enc)-32*len(ids):], b[len(b)-32*len(ids):]) {
			t.Fatalf("%x decodes to %d ids that are not its bytes", b, len(ids))
		}
		again, err := decodeClaims(encodeClaims(ids))
		if err != nil || !slices.Equal(again, ids) {
			t.Fatalf("%x: %d ids do not round-trip: %v", b, len(ids), err)
		}
	})
}

func TestParseClaimKey(t *testing.T) {
	w, seq, ok := parseClaimKey(claimKey("0123456789abcdef", 42))
	if !ok || w != "0123456789abcdef" || seq != 42 {
		t.Fatalf("parsed %q %d %v", w, seq, ok)
	}
	for _, k := range []string{"claims/x", "claims/0123456789abcdef-", "index/0123456789abcdef-0000000000000001",
		"claims/0123456789abcdeg-0000000000000001", "claims/0123456789abcdef-000000000000000z", "claims/0123456789abcdef0000000000000001"} {
		if _, _, ok := parseClaimKey(k); ok {
			t.Errorf("%q parsed", k)
		}
	}
}

// publishNow publishes r's claims as if claimEvery had passed.
func publishNow(t *testing.T, r *Repository) {
	t.Helper()
	c := r.claimsOf()
	c.mu.Lock()
	c.published = time.Time{}
	c.mu.Unlock()
	if err := r.publishClaims(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

// readNow reads the other writers' claims now.
func readNow(t *testing.T, r *Repository) {
	t.Helper()
	if err := r.refreshClaims(context.Background(), r.claimsOf()); err != nil {
		t.Fatal(err)
	}
}

// twoWriters opens two writers on a new repository that have seen each
// other's first claim object.
func twoWriters(t *testing.T) (a, b *Repository, be backend.Backend) {
	_, be = newTestRepo(t)
	a, b = reopen(t, be, Options{}), reopen(t, be, Options{})
	publishNow(t, a)
	publishNow(t, b)
	readNow(t, a)
	readNow(t, b)
	return a, b, be
}

// claimBlob has r reserve a new blob and publish its claim, and has o read
// it; it returns the blob.
func claimBlob(t *testing.T, r, o *Repository) (ID, []byte) {
	t.Helper()
	data := randBytes(10_000)
	id := r.NewHasher().Sum(data)
	if got := r.ReserveShared(id); got != Store {
		t.Fatalf("a new blob: %v, want Store", got)
	}
	publishNow(t, r)
	readNow(t, o)
	if got := o.ReserveShared(id); got != Deferred {
		t.Fatalf("a blob another writer claimed: %v, want Deferred", got)
	}
	if o.Has(id) {
		t.Fatal("a deferred blob is in the index")
	}
	return id, data
}

// storeBlob stores a reserved blob through r's write path and flushes.
func storeBlob(t *testing.T, r *Repository, id ID, data []byte) {
	t.Helper()
	pk := r.NewPacker(0)
	if _, err := pk.Add(BlobData, id, data); err != nil {
		t.Fatal(err)
	}
	p, err := pk.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SavePack(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestClaimsDeferUntilIndexed: a blob another writer claimed is deferred;
// once the claimant stored and indexed it, AwaitDeferred finds it in the
// index and leaves nothing to store.
func TestClaimsDeferUntilIndexed(t *testing.T) {
	a, b, _ := twoWriters(t)
	id, data := claimBlob(t, a, b)
	storeBlob(t, a, id, data)
	publishNow(t, a) // the blob is no longer outstanding
	a.WithdrawClaims(context.Background())
	start := time.Now()
	store, err := b.AwaitDeferred(context.Background(), []ID{id})
	if err != nil || len(store) != 0 {
		t.Fatalf("AwaitDeferred: %v, %v; want nothing to store", store, err)
	}
	if d := time.Since(start); d > claimStale {
		t.Errorf("AwaitDeferred took %v", d)
	}
	if !b.Has(id) {
		t.Fatal("the blob is not in b's index")
	}
}

// TestClaimsGivenUp: a claimant that withdraws its claims without storing
// the blob (a failed export) leaves it to the writers that deferred it, at
// once.
func TestClaimsGivenUp(t *testing.T) {
	a, b, _ := twoWriters(t)
	id, data := claimBlob(t, a, b)
	a.WithdrawClaims(context.Background())
	start := time.Now()
	store, err := b.AwaitDeferred(context.Background(), []ID{id})
	if err != nil || !slices.Equal(store, []ID{id}) {
		t.Fatalf("AwaitDeferred: %v, %v; want the blob", store, err)
	}
	if d := time.Since(start); d >= claimStale {
		t.Errorf("AwaitDeferred took %v for a withdrawn claim", d)
	}
	if !b.Reserve(id) {
		t.Fatal("b may not store the blob")
	}
	storeBlob(t, b, id, data)
	if !b.Has(id) || b.DeferredCount() != 0 {
		t.Fatal("the blob b stored is not in its index")
	}
}

// TestClaimsDeadClaimant: a claimant killed after publishing its claim
// (its object stays, unchanged) is presumed dead after claimStale: the
// writer that deferred its blob stores it.
func TestClaimsDeadClaimant(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for claimStale")
	}
	a, b, be := twoWriters(t)
	id, data := claimBlob(t, a, b)
	_ = a // killed: nothing more from a
	start := time.Now()
	store, err := b.AwaitDeferred(context.Background(), []ID{id})
	if err != nil || !slices.Equal(store, []ID{id}) {
		t.Fatalf("AwaitDeferred: %v, %v; want the blob", store, err)
	}
	if d := time.Since(start); d < claimStale/2 || d > claimStale+5*time.Second {
		t.Errorf("AwaitDeferred took %v, want about claimStale (%v)", d, claimStale)
	}
	if !b.Reserve(id) {
		t.Fatal("b may not store the blob")
	}
	storeBlob(t, b, id, data)
	if !b.Has(id) || b.DeferredCount() != 0 {
		t.Fatal("the blob b stored is not in its index")
	}
	// The dead writer's object no longer keeps b publishing.
	readNow(t, b)
	c0 := b.claimsOf()
	c0.mu.Lock()
	active := c0.active()
	c0.mu.Unlock()
	if active {
		t.Error("a dead writer's claim object keeps b publishing claims")
	}
	// A writer opened now reads the dead writer's claims as live for
	// claimStale at most.
	c := reopen(t, be, Options{})
	readNow(t, c)
	id2 := randID()
	if c.ReserveShared(id2) != Store {
		t.Fatal("an unclaimed blob is not new")
	}
}

// TestClaimsOutstandingUntilIndexed: a blob stays claimed while the index
// file that names it is being written, so that a reader that sees the
// claim withdrawn finds the index file.
func TestClaimsOutstandingUntilIndexed(t *testing.T) {
	_, mem := newTestRepo(t)
	gate := &gatedIndex{Backend: mem, release: make(chan struct{}), entered: make(chan struct{}, 1)}
	a := reopen(t, gate, Options{})
	data := randBytes(1000)
	id := a.NewHasher().Sum(data)
	if a.ReserveShared(id) != Store {
		t.Fatal("not new")
	}
	if !slices.Contains(a.outstanding(), id) {
		t.Fatal("a reserved blob is not outstanding")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		storeBlob(t, a, id, data)
	}()
	<-gate.entered
	if !slices.Contains(a.outstanding(), id) {
		t.Error("a blob whose index file is being written is not outstanding")
	}
	close(gate.release)
	<-done
	if slices.Contains(a.outstanding(), id) {
		t.Error("an indexed blob is outstanding")
	}
}

// gatedIndex holds every index file put until release is closed.
type gatedIndex struct {
	backend.Backend
	release chan struct{}
	entered chan struct{}
}

func (g *gatedIndex) Put(ctx context.Context, key string, data []byte) error {
	if strings.HasPrefix(key, indexPrefix) {
		select {
		case g.entered <- struct{}{}:
		default:
		}
		<-g.release
	}
	return g.Backend.Put(ctx, key, data)
}

// countPuts counts the claim objects put and deleted.
type countPuts struct {
	backend.Backend
	puts, deletes atomic.Int64
}

func (c *countPuts) Put(ctx context.Context, key string, data []byte) error {
	if strings.HasPrefix(key, claimsPrefix) {
		c.puts.Add(1)
	}
	return c.Backend.Put(ctx, key, data)
}

func (c *countPuts) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, claimsPrefix) {
		c.deletes.Add(1)
	}
	return c.Backend.Delete(ctx, key)
}

// TestClaimsLoneWriter: a writer that sees no other publishes one empty
// claim object and deletes it at its end, however much it reserves.
func TestClaimsLoneWriter(t *testing.T) {
	_, mem := newTestRepo(t)
	cp := &countPuts{Backend: mem}
	a := reopen(t, cp, Options{})
	for range 100 {
		if a.ReserveShared(randID()) != Store {
			t.Fatal("not new")
		}
		publishNow(t, a)
		a.KeepClaims(context.Background())
	}
	if cp.puts.Load() != 1 {
		t.Fatalf("a lone writer put %d claim objects, want 1", cp.puts.Load())
	}
	var keys []string
	mem.List(context.Background(), claimsPrefix, func(oi backend.ObjectInfo) error { keys = append(keys, oi.Key); return nil })
	if len(keys) != 1 {
		t.Fatalf("claim objects: %v", keys)
	}
	if ids, err := a.readClaimObject(context.Background(), keys[0]); err != nil || len(ids) != 0 {
		t.Fatalf("the lone writer's object claims %d blobs (%v)", len(ids), err)
	}
	a.WithdrawClaims(context.Background())
	publishNow(t, a)
	if cp.puts.Load() != 1 || cp.deletes.Load() != 1 {
		t.Fatalf("after WithdrawClaims: %d puts, %d deletes", cp.puts.Load(), cp.deletes.Load())
	}
}

// TestClaimsBesideOthers: beside another writer, a writer republishes its
// outstanding set when it changes and replaces its previous object.
func TestClaimsBesideOthers(t *testing.T) {
	a, b, be := twoWriters(t)
	var ids []ID
	for range 3 {
		id := randID()
		a.ReserveShared(id)
		ids = append(ids, id)
		publishNow(t, a)
	}
	readNow(t, b)
	for _, id := range ids {
		if b.ReserveShared(id) != Deferred {
			t.Fatal("b does not defer a blob a claims")
		}
	}
	n := 0
	be.List(context.Background(), claimsPrefix, func(backend.ObjectInfo) error { n++; return nil })
	if n != 2 {
		t.Fatalf("%d claim objects for two writers", n)
	}
}

// TestRemoveStaleClaims: gc's helper deletes claim objects older than
// ClaimExpire, by the storage's times, and keeps the others.
func TestRemoveStaleClaims(t *testing.T) {
	dir := t.TempDir()
	be, err := fs.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old, young := claimKey("0123456789abcdef", 3), claimKey("fedcba9876543210", 0)
	for _, k := range []string{old, young} {
		if err := be.Put(ctx, k, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Now().Add(-ClaimExpire - time.Minute)
	if err := os.Chtimes(filepath.Join(dir, filepath.FromSlash(old)), at, at); err != nil {
		t.Fatal(err)
	}
	n, err := RemoveStaleClaims(ctx, be, time.Now())
	if err != nil || n != 1 {
		t.Fatalf("removed %d, %v", n, err)
	}
	if _, err := be.Stat(ctx, old); err == nil {
		t.Error("the stale claim object is left")
	}
	if _, err := be.Stat(ctx, young); err != nil {
		t.Errorf("the young claim object: %v", err)
	}
}

// TestGCRemovesStaleClaims: gc deletes a killed writer's claim object once
// it is older than ClaimExpire, and keeps a live writer's.
func TestGCRemovesStaleClaims(t *testing.T) {
	dir := t.TempDir()
	be, err := fs.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF}); err != nil {
		t.Fatal(err)
	}
	dead, live := reopen(t, be, Options{}), reopen(t, be, Options{})
	publishNow(t, dead)
	publishNow(t, live)
	at := time.Now().Add(-ClaimExpire - time.Minute)
	if err := os.Chtimes(filepath.Join(dir, filepath.FromSlash(dead.claimsOf().key)), at, at); err != nil {
		t.Fatal(err)
	}
	if _, err := reopen(t, be, Options{}).GC(ctx, GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Stat(ctx, dead.claimsOf().key); err == nil {
		t.Error("gc left the stale claim object")
	}
	if _, err := be.Stat(ctx, live.claimsOf().key); err != nil {
		t.Errorf("gc deleted a live writer's claim object: %v", err)
	}
}

// TestClaimsReleasedUntilRefresh: a blob whose claim its claimant withdrew
// (it indexed it) stays deferred to it until the reader's next index
// refresh, which finds it: it is never left to be stored again between
// the two.
func TestClaimsReleasedUntilRefresh(t *testing.T) {
	a, b, _ := twoWriters(t)
	data := randBytes(10_000)
	id := a.NewHasher().Sum(data)
	if a.ReserveShared(id) != Store {
		t.Fatal("not new")
	}
	publishNow(t, a)
	readNow(t, b)
	storeBlob(t, a, id, data)
	publishNow(t, a) // a's set no longer holds the blob
	readNow(t, b)
	if b.Has(id) {
		t.Fatal("b read the index already: the test misses its point")
	}
	f := b.refresherOf() // b's next index refresh is not due yet
	f.mu.Lock()
	f.next = time.Now().Add(time.Hour)
	f.mu.Unlock()
	if got := b.ReserveShared(id); got != Deferred {
		t.Fatalf("a blob whose claim was withdrawn a moment ago: %v, want Deferred", got)
	}
	if err := b.refreshNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := b.claimsOf()
	c.mu.Lock()
	n := len(c.released)
	c.mu.Unlock()
	if !b.Has(id) || n != 0 {
		t.Fatalf("after b's index refresh: in the index %v, %d blobs still released", b.Has(id), n)
	}
	if store, err := b.AwaitDeferred(context.Background(), []ID{id}); err != nil || len(store) != 0 {
		t.Fatalf("AwaitDeferred: %v %v", store, err)
	}
}

// TestClaimsYield: a writer that deferred to a writer whose name sorts
// first waits, before it calls a blob new, for that writer's claim on it.
func TestClaimsYield(t *testing.T) {
	_, be := newTestRepo(t)
	a, b := reopen(t, be, Options{}), reopen(t, be, Options{})
	a.claimsOf().writer, b.claimsOf().writer = "0000000000000000", "ffffffffffffffff"
	// Long enough that a loaded machine's publish and read fit in them
	// (CI once took more than the 30 ms yieldWait): the test then
	// depends on the order of events, not on their speed.
	const wait = 10 * time.Second
	for _, r := range []*Repository{a, b} {
		c := r.claimsOf()
		c.mu.Lock()
		c.yieldFor, c.yieldWait = time.Minute, wait
		c.mu.Unlock()
	}
	publishNow(t, a)
	publishNow(t, b)
	readNow(t, a)
	readNow(t, b)
	claimBlob(t, a, b) // b defers to a: b yields
	next := randID()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // b's claim reader, as an export runs it
		for ctx.Err() == nil {
			b.refreshClaims(ctx, b.claimsOf())
			time.Sleep(time.Millisecond)
		}
	}()
	go func() {
		time.Sleep(yieldWait / 3) // b is waiting for it by now, mostly
		a.ReserveShared(next)
		publishNow(t, a)
	}()
	if got := b.ReserveShared(next); got != Deferred {
		t.Fatalf("a blob a claims while b yields: %v, want Deferred", got)
	}
	// a, first, never yields to b. (b's own yield, a minute here, would
	// hold its next new blob for the whole wait: end it.)
	c := b.claimsOf()
	c.mu.Lock()
	c.yieldUntil = time.Time{}
	c.mu.Unlock()
	claimBlob(t, b, a)
	start := time.Now()
	if a.ReserveShared(randID()) != Store || time.Since(start) >= wait {
		t.Fatalf("a yielded to b (%v)", time.Since(start))
	}
}
