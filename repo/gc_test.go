package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/blockmover/blockmover/repo/backend/mem"
)

// clock wraps a real backend and moves the backend's clock forward: an
// object written after advance(d) carries a ModTime d later, so tests can
// let grace periods pass without sleeping.
type clock struct {
	backend.Backend
	offset atomic.Int64
	mu     sync.Mutex
	born   map[string]time.Duration // offset when each object was written
}

func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func (c *clock) Put(ctx context.Context, key string, data []byte) error {
	err := c.Backend.Put(ctx, key, data)
	if err == nil {
		c.mu.Lock()
		if c.born == nil {
			c.born = map[string]time.Duration{}
		}
		c.born[key] = time.Duration(c.offset.Load())
		c.mu.Unlock()
	}
	return err
}

func (c *clock) shift(oi backend.ObjectInfo) backend.ObjectInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	oi.ModTime = oi.ModTime.Add(c.born[oi.Key])
	return oi
}

func (c *clock) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	oi, err := c.Backend.Stat(ctx, key)
	return c.shift(oi), err
}

func (c *clock) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	return c.Backend.List(ctx, prefix, func(oi backend.ObjectInfo) error { return fn(c.shift(oi)) })
}

// volume writes a snapshot of n data chunks (seeded) and returns it.
func writeVolume(t *testing.T, r *Repository, name string, seed, n int) *Snapshot {
	t.Helper()
	ctx := context.Background()
	h := r.NewHasher()
	p := r.NewPacker(256 << 10)
	var entries []Entry
	var size int64
	for i := range n {
		data := bytes.Repeat(fmt.Appendf(nil, "%s-%d-%d|", name, seed, i), 4000)
		data = append(data, randBytes(20_000)...) // some entropy
		id := h.Sum(data)
		entries = append(entries, Entry{Length: int64(len(data)), ID: id})
		size += int64(len(data))
		if !r.Reserve(id) {
			continue
		}
		if _, err := p.Add(BlobData, id, data); err != nil {
			t.Fatal(err)
		}
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
	pid, err := r.SavePage(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s := &Snapshot{Volume: name, Time: time.Now(), Size: size, SegmentSize: r.Config().Chunking.SegmentSize, Pages: []ID{pid}}
	if err := r.SaveSnapshot(ctx, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func packCount(t *testing.T, be backend.Backend) (n int, bytes int64) {
	be.List(context.Background(), dataPrefix, func(oi backend.ObjectInfo) error {
		n++
		bytes += oi.Size
		return nil
	})
	return n, bytes
}

func mustCheck(t *testing.T, be backend.Backend) {
	t.Helper()
	r := reopen(t, be, Options{NoIndex: true})
	res, err := r.Check(context.Background(), CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Fatalf("check: %v", res.Errors())
	}
}

func loadAll(t *testing.T, r *Repository, s *Snapshot) {
	t.Helper()
	o := r.NewBlobOpener()
	entries, err := r.LoadPage(context.Background(), o, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := r.LoadBlob(context.Background(), o, e.ID, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGCDeletesAfterGrace(t *testing.T) {
	ctx := context.Background()
	be := &clock{Backend: mem.New()}
	r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	keep := writeVolume(t, r, "keep", 1, 30)
	drop := writeVolume(t, r, "drop", 2, 30)
	_, before := packCount(t, be)
	if err := r.DeleteSnapshot(ctx, drop.ID); err != nil {
		t.Fatal(err)
	}
	be.advance(2 * time.Hour) // packs younger than the grace period are kept whole
	g := reopen(t, be, Options{})
	opts := GCOptions{Grace: time.Hour}
	res, err := g.GC(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 0 || res.Condemned == 0 {
		t.Fatalf("first gc: %+v; want packs condemned, none deleted", res)
	}
	be.advance(2 * time.Hour)
	res, err = reopen(t, be, Options{}).GC(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted == 0 {
		t.Fatalf("second gc after the grace period deleted nothing: %+v", res)
	}
	_, after := packCount(t, be)
	t.Logf("pack bytes %d → %d; %+v", before, after, res)
	if after > before*6/10 {
		t.Fatalf("pack bytes %d → %d: the dropped half was not collected", before, after)
	}
	mustCheck(t, be)
	loadAll(t, reopen(t, be, Options{}), keep)
}

// TestGCWriterSafety: a writer that opened before a pack was condemned may
// reference it; gc must then keep it. A writer that opened after must not
// reference condemned packs at all.
func TestGCWriterSafety(t *testing.T) {
	ctx := context.Background()
	be := &clock{Backend: mem.New()}
	r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// Snapshot "old" is forgotten: its chunks become garbage.
	h := r.NewHasher()
	blob := randBytes(100_000)
	id := h.Sum(blob)
	store := func(r *Repository) *Snapshot {
		if r.Reserve(id) {
			p := r.NewPacker(0)
			p.Add(BlobData, id, blob)
			pk, _ := p.Finish()
			if err := r.SavePack(ctx, pk); err != nil {
				t.Fatal(err)
			}
		}
		pid, err := r.SavePage(ctx, []Entry{{Length: int64(len(blob)), ID: id}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		s := &Snapshot{Volume: "v", Time: time.Now(), Size: int64(len(blob)), SegmentSize: r.Config().Chunking.SegmentSize, Pages: []ID{pid}}
		if err := r.SaveSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	old := store(r)
	r.DeleteSnapshot(ctx, old.ID)
	be.advance(2 * time.Hour) // packs younger than the grace period are kept whole

	early := reopen(t, be, Options{}) // opened before gc: sees the blob as usable
	if !early.Has(id) {
		t.Fatal("blob not usable before gc")
	}
	opts := GCOptions{Grace: time.Hour}
	if _, err := reopen(t, be, Options{}).GC(ctx, opts); err != nil {
		t.Fatal(err)
	}
	late := reopen(t, be, Options{})
	if late.Has(id) {
		t.Fatal("a writer opened after gc deduplicates against a condemned pack")
	}
	lateSnap := store(late)   // stores the blob again, in a new pack
	earlySnap := store(early) // deduplicates against the condemned pack
	be.advance(2 * time.Hour)
	if _, err := reopen(t, be, Options{}).GC(ctx, opts); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, be)
	r2 := reopen(t, be, Options{})
	loadAll(t, r2, lateSnap)
	loadAll(t, r2, earlySnap)
}

func TestGCRepacksAndCompacts(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF, PackSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// Interleave two volumes in the same packs, then forget one: every
	// pack is half garbage, so gc must repack rather than delete.
	h := r.NewHasher()
	p := r.NewPacker(0)
	var ea, eb []Entry
	for i := range 40 {
		data := randBytes(40_000)
		id := h.Sum(data)
		if i%2 == 0 {
			ea = append(ea, Entry{Length: 40_000, ID: id})
		} else {
			eb = append(eb, Entry{Length: 40_000, ID: id})
		}
		r.Reserve(id)
		p.Add(BlobData, id, data)
		if p.Full() {
			pk, _ := p.Finish()
			r.SavePack(ctx, pk)
		}
	}
	pk, _ := p.Finish()
	r.SavePack(ctx, pk)
	snap := func(name string, e []Entry) *Snapshot {
		pid, _ := r.SavePage(ctx, e)
		r.Flush(ctx)
		s := &Snapshot{Volume: name, Time: time.Now(), Size: 20 * 40_000, SegmentSize: r.Config().Chunking.SegmentSize, Pages: []ID{pid}}
		if err := r.SaveSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	snaps := []*Snapshot{snap("a", ea), snap("b", eb)}
	for i := range 3 { // more index files to compact
		snaps = append(snaps, writeVolume(t, r, "c", i, 3))
	}
	r.DeleteSnapshot(ctx, snaps[1].ID)
	var idxBefore int
	be.List(ctx, indexPrefix, func(backend.ObjectInfo) error { idxBefore++; return nil })
	_, before := packCount(t, be)
	res, err := reopen(t, be, Options{}).GC(ctx, GCOptions{Grace: 0})
	if err != nil {
		t.Fatal(err)
	}
	_, after := packCount(t, be)
	t.Logf("%+v; pack bytes %d → %d", res, before, after)
	if res.IndexFilesLeft >= idxBefore {
		t.Fatalf("index files %d → %d: not compacted", idxBefore, res.IndexFilesLeft)
	}
	mustCheck(t, be)
	if res.Repacked == 0 {
		t.Fatal("half-garbage packs were not repacked")
	}
	if after > before*7/10 {
		t.Fatalf("pack bytes %d → %d after repacking", before, after)
	}
	r2 := reopen(t, be, Options{})
	for i, s := range snaps {
		if i != 1 {
			loadAll(t, r2, s)
		}
	}
}

func TestGCRefusesDamagedRepository(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	writeVolume(t, r, "a", 1, 5)
	// Lose the index: every snapshot references unindexed chunks. gc
	// must stop before deleting anything.
	be.List(ctx, indexPrefix, func(oi backend.ObjectInfo) error { return be.Delete(ctx, oi.Key) })
	n0, _ := packCount(t, be)
	if _, err := reopen(t, be, Options{}).GC(ctx, GCOptions{}); err == nil {
		t.Fatal("gc ran on a repository whose snapshots reference unindexed chunks")
	}
	if n, _ := packCount(t, be); n != n0 {
		t.Fatal("gc deleted packs of a damaged repository")
	}
	// The lease was released.
	be.List(ctx, "locks/", func(oi backend.ObjectInfo) error {
		t.Errorf("lease object left behind: %s", oi.Key)
		return nil
	})
	res, err := reopen(t, be, Options{NoIndex: true}).RepairIndex(ctx, RepairIndexOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Packs != n0 || len(res.Unreadable) != 0 || len(res.Salvaged) != 0 {
		t.Fatalf("repair index: %+v", res)
	}
	mustCheck(t, be)
	if _, err := reopen(t, be, Options{}).GC(ctx, GCOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestGCLegacyLock: the lock object of an earlier mover's gc holds gc off
// while it is fresh, and is taken over once stale.
func TestGCLegacyLock(t *testing.T) {
	ctx := context.Background()
	_, mb := newTestRepo(t)
	be := &clock{Backend: mb}
	be.Put(ctx, legacyGCLock, []byte("{}"))
	_, err := reopen(t, be, Options{}).GC(ctx, GCOptions{})
	if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), legacyGCLock) {
		t.Fatalf("gc with a fresh legacy lock: %v, want ErrLeaseHeld naming it", err)
	}
	be.advance(DefaultStaleLease + time.Minute)
	if _, err := reopen(t, be, Options{}).GC(ctx, GCOptions{}); err != nil {
		t.Fatalf("gc with a stale legacy lock: %v", err)
	}
	if _, err := be.Stat(ctx, legacyGCLock); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("stale legacy lock left: %v", err)
	}
}

func TestPolicy(t *testing.T) {
	base := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var snaps []*Snapshot
	// Two snapshots a day for 70 days.
	for d := range 70 {
		for h := range 2 {
			s := &Snapshot{Time: base.Add(-time.Duration(d)*24*time.Hour - time.Duration(h)*6*time.Hour)}
			s.ID[0], s.ID[1] = byte(d), byte(h)
			snaps = append(snaps, s)
		}
	}
	count := func(p Policy) int {
		n := 0
		for _, d := range p.Apply(snaps) {
			if d.Keep {
				n++
			}
		}
		return n
	}
	tests := []struct {
		p    Policy
		want int
	}{
		{Policy{Last: 3}, 3},
		{Policy{Daily: 7}, 7},
		{Policy{Last: 2, Daily: 7}, 8}, // the newest two are on day 0, which daily keeps too
		{Policy{Weekly: 4}, 4},
		{Policy{Monthly: 12}, 3}, // 70 days span three months
		{Policy{Daily: 1000}, 70},
	}
	for _, tc := range tests {
		if got := count(tc.p); got != tc.want {
			t.Errorf("%+v keeps %d, want %d", tc.p, got, tc.want)
		}
	}
	if d := (Policy{Last: 1}).Apply(snaps); !d[0].Keep || d[0].Snapshot.Time != base {
		t.Error("keep-last 1 did not keep the newest")
	}
}

// TestGCCondemnationRestarts: a pack that a later gc run finds referenced
// again is usable again, and its grace period starts over when it is
// condemned anew; deleting it on the strength of the first condemnation
// could lose the chunk a writer took while it was live.
func TestGCCondemnationRestarts(t *testing.T) {
	ctx := context.Background()
	be := &clock{Backend: mem.New()}
	r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	s0 := writeVolume(t, r, "v", 1, 3)
	o := r.NewBlobOpener()
	entries, _ := r.LoadPage(ctx, o, s0, 0)
	blob := entries[0].ID
	ref, _ := r.Lookup(blob)
	packKey := PackKey(ref.Pack)
	r.DeleteSnapshot(ctx, s0.ID)
	be.advance(2 * time.Hour) // packs younger than the grace period are kept whole
	opts := GCOptions{Grace: time.Hour}
	gcRun := func() *GCResult {
		t.Helper()
		res, err := reopen(t, be, Options{}).GC(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	early := reopen(t, be, Options{})
	gcRun() // condemns the pack
	// early deduplicates against it: the pack is live again.
	pid, _ := early.SavePage(ctx, entries)
	early.Flush(ctx)
	s1 := &Snapshot{Volume: "v", Time: time.Now(), Size: s0.Size, SegmentSize: s0.SegmentSize, Pages: []ID{pid}}
	if err := early.SaveSnapshot(ctx, s1); err != nil {
		t.Fatal(err)
	}
	be.advance(10 * time.Minute)
	gcRun()
	if !reopen(t, be, Options{}).Has(blob) {
		t.Fatal("a pack found referenced again is still treated as condemned")
	}
	early.DeleteSnapshot(ctx, s1.ID)
	be.advance(10 * time.Minute)
	gcRun() // condemned anew
	be.advance(45 * time.Minute)
	gcRun() // over an hour since the first condemnation, not since the second
	if _, err := be.Stat(ctx, packKey); err != nil {
		t.Fatalf("pack deleted on the strength of a condemnation it had outlived: %v", err)
	}
	be.advance(time.Hour)
	if res := gcRun(); res.Deleted == 0 {
		t.Fatal("pack not deleted after a full grace period of condemnation")
	}
	if _, err := be.Stat(ctx, packKey); err == nil {
		t.Fatal("pack still there")
	}
}

// TestGCRemovesStaleTemp: on a filesystem repository, gc deletes the
// temporary files that interrupted writes left once they are older than
// the grace period, and leaves a young one (a write that may be running).
func TestGCRemovesStaleTemp(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "repo")
	be, err := fs.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	keep := writeVolume(t, r, "keep", 1, 10)
	stale := filepath.Join(dir, "data", backend.TempPrefix+"crashed")
	young := filepath.Join(dir, "data", backend.TempPrefix+"writing")
	for _, p := range []string{stale, young} {
		if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-25 * time.Hour)
	if err := os.Chtimes(stale, past, past); err != nil {
		t.Fatal(err)
	}
	res, err := reopen(t, be, Options{}).GC(ctx, GCOptions{Grace: DefaultGrace})
	if err != nil {
		t.Fatal(err)
	}
	if res.TempFiles != 1 || res.TempBytes != 4096 {
		t.Fatalf("gc removed %d temporary files (%d bytes), want 1 (4096)", res.TempFiles, res.TempBytes)
	}
	if _, err := os.Stat(stale); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("stale temporary file: %v, want it deleted", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("young temporary file: %v, want it kept", err)
	}
	mustCheck(t, be)
	loadAll(t, reopen(t, be, Options{}), keep)
}
