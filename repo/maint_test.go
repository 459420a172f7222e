package repo

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/mem"
)

// Tests of repository maintenance under damage and crashes: repair that
// only adds knowledge, damage that stays local, the lease, and gc beside
// interrupted exports. The kill tests of gc, forget and repair index are
// in cmd/mover (maintcrash_test.go): they SIGKILL a real process.

// loadErr reads every chunk of s, and returns the first failure.
func loadErr(r *Repository, s *Snapshot) error {
	ctx := context.Background()
	o := r.NewBlobOpener()
	for i := range s.Pages {
		entries, err := r.LoadPage(ctx, o, s, i)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Hole {
				continue
			}
			if _, err := r.LoadBlob(ctx, o, e.ID, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// packOf returns the pack that holds the first chunk of s.
func packOf(t *testing.T, r *Repository, s *Snapshot) ID {
	t.Helper()
	entries, err := r.LoadPage(context.Background(), r.NewBlobOpener(), s, 0)
	if err != nil {
		t.Fatal(err)
	}
	ref, ok := r.Lookup(entries[0].ID)
	if !ok {
		t.Fatal("first chunk not indexed")
	}
	return ref.Pack
}

// twoVolumes is a repository (1 MiB packs) holding snapshots of volumes a
// and b, 20 chunks each.
func twoVolumes(t *testing.T) (backend.Backend, *Repository, *Snapshot, *Snapshot) {
	t.Helper()
	be := mem.New()
	r, err := Init(context.Background(), be, testPassword, InitOptions{KDF: testKDF, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return be, r, writeVolume(t, r, "a", 1, 20), writeVolume(t, r, "b", 2, 20)
}

// TestRepairIndexKeepsDamagedPackBlobs: a pack whose header is damaged
// still has intact blobs that the old index describes. repair index keeps
// them (verified), so every snapshot still imports.
func TestRepairIndexKeepsDamagedPackBlobs(t *testing.T) {
	ctx := context.Background()
	be, r, a, b := twoVolumes(t)
	victim := packOf(t, r, a)
	flip(t, be, PackKey(victim), func(n int) int { return n - 20 }) // in the sealed header
	before := reopen(t, be, Options{})
	for _, s := range []*Snapshot{a, b} {
		if err := loadErr(before, s); err != nil {
			t.Fatalf("before repair: %v", err)
		}
	}
	res, err := reopen(t, be, Options{NoIndex: true}).RepairIndex(ctx, RepairIndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Salvaged) != 1 || res.Salvaged[0].Pack != victim || res.Salvaged[0].Lost != 0 || res.Salvaged[0].Kept == 0 {
		t.Fatalf("repair index: salvaged %+v, want pack %s with every blob kept", res.Salvaged, victim.Short())
	}
	after := reopen(t, be, Options{})
	for _, s := range []*Snapshot{a, b} {
		if err := loadErr(after, s); err != nil {
			t.Fatalf("after repair index: %v", err)
		}
	}
	// A second repair keeps them too: the entries it wrote are the only
	// record now, and they verify.
	if _, err := reopen(t, be, Options{NoIndex: true}).RepairIndex(ctx, RepairIndexOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := loadErr(reopen(t, be, Options{}), a); err != nil {
		t.Fatalf("after a second repair index: %v", err)
	}
}

// TestRepairTruncatedPack: the blobs of a truncated pack that are still
// whole are kept by repair index; repair snapshots reports exactly the lost
// ranges and writes a copy in which they restore as zeros.
func TestRepairTruncatedPack(t *testing.T) {
	ctx := context.Background()
	be, r, a, b := twoVolumes(t)
	victim := packOf(t, r, a)
	rewrite(t, be, PackKey(victim), func(d []byte) []byte { return d[:len(d)/2] })
	res, err := reopen(t, be, Options{NoIndex: true}).RepairIndex(ctx, RepairIndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Salvaged) != 1 || res.Salvaged[0].Kept == 0 || res.Salvaged[0].Lost == 0 {
		t.Fatalf("salvaged %+v: want some blobs kept and some lost", res.Salvaged)
	}
	r2 := reopen(t, be, Options{})
	damaged, err := r2.DamagedSnapshots(ctx, DamageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(damaged) != 1 || damaged[0].Snapshot != a.ID || len(damaged[0].MissingChunks) != res.Salvaged[0].Lost {
		t.Fatalf("damaged %+v; want snapshot a with the %d lost chunks", damaged, res.Salvaged[0].Lost)
	}
	if err := loadErr(r2, b); err != nil {
		t.Fatalf("intact snapshot b: %v", err)
	}
	fixed, err := r2.RepairSnapshots(ctx, damaged, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := fixed[0]
	if c.Repaired == nil || c.Repaired.From != a.ID || len(c.Repaired.Damaged) == 0 {
		t.Fatalf("repaired copy records %+v", c.Repaired)
	}
	r3 := reopen(t, be, Options{})
	if err := loadErr(r3, c); err != nil {
		t.Fatalf("repaired copy: %v", err)
	}
	if _, err := r3.LoadSnapshot(ctx, a.ID); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("damaged original: %v, want it replaced", err)
	}
	if d, _ := r3.DamagedSnapshots(ctx, DamageOptions{ReadData: true}); len(d) != 0 {
		t.Fatalf("after repair: %+v", d)
	}
	// gc runs again (it refuses while a snapshot needs missing data).
	if _, err := r3.GC(ctx, GCOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedSnapshotsReadsPacks: a snapshot whose pack is gone, or (with
// ReadData) whose chunk does not decrypt, is reported, although every
// chunk it needs is still named by an index file.
func TestDamagedSnapshotsReadsPacks(t *testing.T) {
	ctx := context.Background()
	be, r, a, b := twoVolumes(t)
	if err := be.Delete(ctx, PackKey(packOf(t, r, a))); err != nil {
		t.Fatal(err)
	}
	flip(t, be, PackKey(packOf(t, r, b)), func(n int) int { return 100 })
	r2 := reopen(t, be, Options{})
	if w := r2.Warnings(); len(w) != 1 || !strings.Contains(w[0].Error(), "do not exist") || !errors.Is(w[0], ErrBlobMissing) {
		t.Fatalf("open with a missing pack warned %q", w)
	}
	d, err := r2.DamagedSnapshots(ctx, DamageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != 1 || d[0].Snapshot != a.ID || d[0].MissingBytes == 0 {
		t.Fatalf("damage without reading data: %+v, want snapshot a", d)
	}
	d, err = r2.DamagedSnapshots(ctx, DamageOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[ID]SnapshotDamage{}
	for _, x := range d {
		byID[x.Snapshot] = x
	}
	if len(d) != 2 || len(byID[b.ID].MissingChunks) != 1 || byID[a.ID].MissingBytes == 0 {
		t.Fatalf("damage reading data: %+v, want a and one chunk of b", d)
	}
}

// TestDamagedIndexFileStaysLocal: one damaged index file does not stop the
// repository from opening; snapshots whose chunks other files list still
// load, and gc refuses to delete anything, naming the file and the repair.
func TestDamagedIndexFileStaysLocal(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	a := writeVolume(t, r, "a", 1, 10)
	var idxA []string
	be.List(ctx, indexPrefix, func(oi backend.ObjectInfo) error { idxA = append(idxA, oi.Key); return nil })
	b := writeVolume(t, reopen(t, be, Options{}), "b", 2, 10)
	flip(t, be, idxA[0], func(n int) int { return n / 2 })
	r2 := reopen(t, be, Options{})
	if w := r2.Warnings(); len(w) != 1 || !strings.Contains(w[0].Error(), idxA[0]) || !errors.Is(w[0], ErrIndexDamaged) {
		t.Fatalf("warnings %q do not name %s and repair index", w, idxA[0])
	}
	if err := loadErr(r2, b); err != nil {
		t.Fatalf("snapshot b, whose chunks another index file lists: %v", err)
	}
	if err := loadErr(r2, a); err == nil {
		t.Fatal("snapshot a loads without its index file")
	}
	n0, _ := packCount(t, be)
	_, err = r2.GC(ctx, GCOptions{})
	if err == nil || !strings.Contains(err.Error(), idxA[0]) || !errors.Is(err, ErrIndexDamaged) {
		t.Fatalf("gc with a damaged index file: %v", err)
	}
	if n, _ := packCount(t, be); n != n0 {
		t.Fatal("gc deleted packs while an index file was unreadable")
	}
	if _, err := reopen(t, be, Options{NoIndex: true}).RepairIndex(ctx, RepairIndexOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := loadErr(reopen(t, be, Options{}), a); err != nil {
		t.Fatalf("after repair index: %v", err)
	}
}

// TestGCKeepsInterruptedExport: the packs an interrupted export indexed
// (no snapshot) stay usable for deduplication for the grace period, so
// that its rerun reuses them; after it they are condemned, and deleted a
// grace period later.
func TestGCKeepsInterruptedExport(t *testing.T) {
	ctx := context.Background()
	be := &clock{Backend: mem.New()}
	r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	h := r.NewHasher()
	blob := randBytes(200_000)
	id := h.Sum(blob)
	p := r.NewPacker(0)
	r.Reserve(id)
	p.Add(BlobData, id, blob)
	pk, _ := p.Finish()
	if err := r.SavePack(ctx, pk); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil { // what a cancelled export does
		t.Fatal(err)
	}
	opts := GCOptions{Grace: time.Hour}
	res, err := reopen(t, be, Options{}).GC(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Condemned != 0 || res.Young == 0 {
		t.Fatalf("gc right after an interrupted export: %+v; want its pack kept as young", res)
	}
	if !reopen(t, be, Options{}).Has(id) {
		t.Fatal("a rerun within the grace period cannot reuse the interrupted export's upload")
	}
	be.advance(2 * time.Hour)
	if res, _ = reopen(t, be, Options{}).GC(ctx, opts); res.Condemned != 1 || res.Deleted != 0 {
		t.Fatalf("gc after the grace period: %+v; want the pack condemned, not deleted", res)
	}
	be.advance(2 * time.Hour)
	if res, _ = reopen(t, be, Options{}).GC(ctx, opts); res.Deleted != 1 {
		t.Fatalf("gc a grace period later: %+v; want the pack deleted", res)
	}
}

// TestGCAfterStaleIndexRestored: the state a gc killed between deleting
// packs and rewriting the index left before the current order (index files
// naming deleted packs beside the compacted ones). Readers must load the
// copies that exist, and gc must count the repacked copies as live.
func TestGCAfterStaleIndexRestored(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	snaps := interleaved(t, r, 3, 40)
	r.DeleteSnapshot(ctx, snaps[1].ID) // every pack is now a third garbage
	saved := map[string][]byte{}
	be.List(ctx, indexPrefix, func(oi backend.ObjectInfo) error {
		saved[oi.Key], _ = backend.ReadAll(ctx, be, oi.Key, 0, -1)
		return nil
	})
	res, err := reopen(t, be, Options{}).GC(ctx, GCOptions{Grace: 0})
	if err != nil {
		t.Fatal(err)
	}
	if res.Repacked == 0 || res.Deleted == 0 {
		t.Fatalf("gc %+v: want packs repacked and deleted", res)
	}
	for k, b := range saved { // put the pre-gc index files back
		be.Put(ctx, k, b)
	}
	for round := range 6 { // index files load in a different order each time
		r2 := reopen(t, be, Options{})
		for _, i := range []int{0, 2} {
			if err := loadErr(r2, snaps[i]); err != nil {
				t.Fatalf("open %d, snapshot %d: %v", round, i, err)
			}
		}
	}
	if _, err := reopen(t, be, Options{}).GC(ctx, GCOptions{Grace: 0}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, be)
	r3 := reopen(t, be, Options{})
	for _, i := range []int{0, 2} {
		if err := loadErr(r3, snaps[i]); err != nil {
			t.Fatalf("after the next gc, snapshot %d: %v", i, err)
		}
	}
}

// interleaved writes n snapshots whose chunks (each of per chunks) share
// packs in turn, so that forgetting one leaves every pack partly garbage.
func interleaved(t *testing.T, r *Repository, n, per int) []*Snapshot {
	t.Helper()
	ctx := context.Background()
	h := r.NewHasher()
	p := r.NewPacker(0)
	entries := make([][]Entry, n)
	for i := range n * per {
		data := randBytes(40_000)
		id := h.Sum(data)
		entries[i%n] = append(entries[i%n], Entry{Length: int64(len(data)), ID: id})
		r.Reserve(id)
		p.Add(BlobData, id, data)
		if p.Full() {
			pk, _ := p.Finish()
			if err := r.SavePack(ctx, pk); err != nil {
				t.Fatal(err)
			}
		}
	}
	if pk, _ := p.Finish(); pk != nil {
		if err := r.SavePack(ctx, pk); err != nil {
			t.Fatal(err)
		}
	}
	var snaps []*Snapshot
	for i, e := range entries {
		pid, err := r.SavePage(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		s := &Snapshot{Volume: "v" + strconv.Itoa(i), Time: time.Now(), Size: int64(per) * 40_000, SegmentSize: r.Config().Chunking.SegmentSize, Pages: []ID{pid}}
		if err := r.SaveSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, s)
	}
	return snaps
}

// TestLease: one holder at a time; a stale lease is taken over and its
// old holder finds out before its next deletion; a released lease is free.
func TestLease(t *testing.T) {
	ctx := context.Background()
	_, mb := newTestRepo(t)
	be := &clock{Backend: mb}
	r := reopen(t, be, Options{NoIndex: true})
	opts := LeaseOptions{Stale: time.Minute, Purpose: "test"}
	l1, err := r.AcquireLease(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.AcquireLease(ctx, opts); !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "test on ") {
		t.Fatalf("second acquire: %v, want ErrLeaseHeld naming the holder", err)
	}
	if err := l1.Check(ctx); err != nil {
		t.Fatalf("holder's check: %v", err)
	}
	l1.Release(ctx)
	l2, err := r.AcquireLease(ctx, opts)
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	// l2's holder stops renewing (paused); the storage's clock moves on.
	close(l2.stop)
	<-l2.done
	l2.stop = nil
	be.advance(2 * time.Minute)
	l3, err := r.AcquireLease(ctx, opts)
	if err != nil {
		t.Fatalf("take over a stale lease: %v", err)
	}
	defer l3.Release(ctx)
	if err := l2.Check(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("the paused holder's check: %v, want ErrLeaseLost", err)
	}
	if err := l3.Check(ctx); err != nil {
		t.Fatalf("the new holder's check: %v", err)
	}
}

// TestLeaseRace: commands that try to take a free or stale lease at once:
// exactly one succeeds.
func TestLeaseRace(t *testing.T) {
	ctx := context.Background()
	_, mb := newTestRepo(t)
	be := &clock{Backend: mb}
	opts := LeaseOptions{Stale: time.Minute}
	for round := range 2 {
		var mu sync.Mutex
		var won []*Lease
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if l, err := acquireLease(ctx, be, opts); err == nil {
					mu.Lock()
					won = append(won, l)
					mu.Unlock()
				} else if !errors.Is(err, ErrLeaseHeld) {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if len(won) != 1 {
			t.Fatalf("round %d: %d commands took the lease", round, len(won))
		}
		// Round 2 races for a stale lease.
		close(won[0].stop)
		<-won[0].done
		won[0].stop = nil
		be.advance(2 * time.Minute)
	}
}

// existsLiar reports success for a put to a key that exists, as the retry
// wrapper does when a retried put finds an object of the same size (it
// takes it for its own lost first attempt).
type existsLiar struct{ backend.Backend }

func (b existsLiar) Put(ctx context.Context, key string, data []byte) error {
	if err := b.Backend.Put(ctx, key, data); err != nil && !errors.Is(err, backend.ErrExists) {
		return err
	}
	return nil
}

// TestLeaseRetriedPut: a put that claims success for an epoch another
// command created does not make a second holder.
func TestLeaseRetriedPut(t *testing.T) {
	ctx := context.Background()
	_, be := newTestRepo(t)
	l1, err := acquireLease(ctx, be, LeaseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Release(ctx)
	// The second command listed before l1's epoch existed: it tries the
	// same epoch, and its put "succeeds".
	l2, err := takeEpoch(ctx, existsLiar{be}, l1.epoch, LeaseOptions{})
	if !errors.Is(err, backend.ErrExists) {
		if l2 != nil {
			l2.Release(ctx)
		}
		t.Fatalf("second holder of epoch %d: %v", l1.epoch, err)
	}
}

// TestLeaseDeadHolder: a lease whose holder was a process of this machine
// that has exited is taken over at once, without waiting for it to go
// stale.
func TestLeaseDeadHolder(t *testing.T) {
	ctx := context.Background()
	_, be := newTestRepo(t)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("no process to outlive: %v", err)
	}
	h := thisHolder("gc")
	if h.Boot == "" || h.PIDNS == "" {
		t.Skip("process scope unknown on this system: only staleness applies")
	}
	l, err := acquireLease(ctx, be, LeaseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	close(l.stop)
	<-l.done
	// Rewrite the epoch as if a process that has exited held it.
	be.Delete(ctx, l.key)
	h.PID = cmd.Process.Pid
	body := []byte(`{"purpose":"gc","host":"` + h.Host + `","pid":` + strconv.Itoa(h.PID) + `,"boot":"` + h.Boot + `","pidns":"` + h.PIDNS + `"}`)
	if err := be.Put(ctx, l.key, body); err != nil {
		t.Fatal(err)
	}
	l2, err := acquireLease(ctx, be, LeaseOptions{})
	if err != nil {
		t.Fatalf("lease of an exited process: %v", err)
	}
	l2.Release(ctx)
}

// TestPolicyByVolume: a retention run keeps per volume, volumes in name
// order, and only the asked volume when one is given.
func TestPolicyByVolume(t *testing.T) {
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var snaps []*Snapshot
	for i, v := range []string{"b", "a", "b", "a", "b"} {
		s := &Snapshot{Volume: v, Time: base.Add(time.Duration(i) * time.Hour)}
		s.ID[0] = byte(i)
		snaps = append(snaps, s)
	}
	var got []string
	for _, d := range (Policy{Last: 1}).ApplyByVolume(snaps, "") {
		got = append(got, d.Snapshot.Volume+strconv.FormatBool(d.Keep))
	}
	if want := "atrue afalse btrue bfalse bfalse"; strings.Join(got, " ") != want {
		t.Fatalf("decisions %v, want %s", got, want)
	}
	if d := (Policy{Last: 1}).ApplyByVolume(snaps, "a"); len(d) != 2 {
		t.Fatalf("volume a only: %d decisions", len(d))
	}
}
