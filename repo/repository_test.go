package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/mem"
)

// testKDF is cheap so that tests open repositories quickly.
var testKDF = KDFParams{N: 1 << 10, R: 8, P: 1}

var testPassword = []byte("correct horse battery staple")

func newTestRepo(t testing.TB) (*Repository, backend.Backend) {
	t.Helper()
	be := mem.New()
	r, err := Init(context.Background(), be, testPassword, InitOptions{KDF: testKDF, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, be
}

func reopen(t testing.TB, be backend.Backend, opts Options) *Repository {
	t.Helper()
	r, err := Open(context.Background(), be, testPassword, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// writeBlobs stores n blobs (half compressible) and a snapshot naming them,
// and returns the blobs by ID.
func writeBlobs(t testing.TB, r *Repository, n int) (map[ID][]byte, *Snapshot) {
	t.Helper()
	ctx := context.Background()
	h := r.NewHasher()
	p := r.NewPacker(0)
	blobs := map[ID][]byte{}
	var entries []Entry
	for i := range n {
		data := randBytes(50_000 + i*1000)
		if i%2 == 0 {
			data = bytes.Repeat([]byte(fmt.Sprintf("blob %d ", i)), 20_000)
		}
		id := h.Sum(data)
		blobs[id] = data
		entries = append(entries, Entry{Length: int64(len(data)), ID: id})
		if !r.Reserve(id) {
			continue
		}
		if _, err := p.Add(BlobData, id, data); err != nil {
			t.Fatal(err)
		}
		if p.Full() {
			pk, err := p.Finish()
			if err != nil {
				t.Fatal(err)
			}
			if err := r.SavePack(ctx, pk); err != nil {
				t.Fatal(err)
			}
		}
	}
	if pk, err := p.Finish(); err != nil {
		t.Fatal(err)
	} else if pk != nil {
		if err := r.SavePack(ctx, pk); err != nil {
			t.Fatal(err)
		}
	}
	var size int64
	for _, e := range entries {
		size += e.Length
	}
	entries = append(entries, Entry{Length: 4096, Hole: true})
	size += 4096
	seg := r.Config().Chunking.SegmentSize
	if size > seg {
		t.Fatalf("test snapshot of %d bytes exceeds one segment", size)
	}
	pid, err := r.SavePage(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s := &Snapshot{Volume: "vol1", Size: size, SegmentSize: seg, Pages: []ID{pid}}
	if err := r.SaveSnapshot(ctx, s); err != nil {
		t.Fatal(err)
	}
	return blobs, s
}

func TestRoundTrip(t *testing.T) {
	r, be := newTestRepo(t)
	blobs, snap := writeBlobs(t, r, 40)
	r2 := reopen(t, be, Options{})
	if r2.IndexLen() != len(blobs)+1 {
		t.Fatalf("reopened index has %d blobs, want %d", r2.IndexLen(), len(blobs)+1)
	}
	if r2.Config().Chunking != r.Config().Chunking {
		t.Fatal("config differs after reopen")
	}
	o := r2.NewBlobOpener()
	for id, want := range blobs {
		got, err := r2.LoadBlob(context.Background(), o, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("blob %s differs", id.Short())
		}
	}
	s, err := r2.FindSnapshot(context.Background(), "latest:vol1")
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != snap.ID {
		t.Fatalf("latest:vol1 = %s, want %s", s.ID.Short(), snap.ID.Short())
	}
	if _, err := r2.FindSnapshot(context.Background(), snap.ID.String()[:6]); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.FindSnapshot(context.Background(), "latest:other"); !errors.Is(err, ErrSnapshotNotFound) {
		t.Fatalf("latest:other: %v", err)
	}
	entries, err := r2.LoadPage(context.Background(), o, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 41 || !entries[40].Hole {
		t.Fatalf("page has %d entries", len(entries))
	}
	res, err := r2.Check(context.Background(), CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() || len(res.Problems) != 0 {
		t.Fatalf("check of a clean repository: %v", res.Problems)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	_, be := newTestRepo(t)
	if _, err := Open(ctx, be, []byte("wrong"), Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := Open(ctx, mem.New(), testPassword, Options{}); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("missing repository: %v", err)
	}
	if _, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF}); !errors.Is(err, ErrRepositoryExists) {
		t.Fatalf("init twice: %v", err)
	}
	if _, err := Init(ctx, mem.New(), nil, InitOptions{KDF: testKDF}); err == nil {
		t.Fatal("init with an empty password succeeded")
	}
}

// rewrite replaces an object's content (backends never overwrite).
func rewrite(t testing.TB, be backend.Backend, key string, fn func([]byte) []byte) {
	t.Helper()
	ctx := context.Background()
	b, err := backend.ReadAll(ctx, be, key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	b = fn(bytes.Clone(b))
	if err := be.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := be.Put(ctx, key, b); err != nil {
		t.Fatal(err)
	}
}

func TestNewerFormatRefused(t *testing.T) {
	_, be := newTestRepo(t)
	rewrite(t, be, configKey, func(b []byte) []byte {
		var m map[string]any
		json.Unmarshal(b, &m)
		m["version"] = FormatVersion + 1
		out, _ := json.Marshal(m)
		return out
	})
	_, err := Open(context.Background(), be, testPassword, Options{})
	if !errors.Is(err, ErrNewerFormat) || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("newer format: %v", err)
	}
}

func TestHostileKeyFile(t *testing.T) {
	ctx := context.Background()
	_, be := newTestRepo(t)
	var key string
	be.List(ctx, keysPrefix, func(oi backend.ObjectInfo) error { key = oi.Key; return nil })
	// A key file that asks for 2^40 · 8 · 128 bytes of scrypt memory must
	// be refused before any derivation starts. It is named by its hash,
	// as a hostile one would be (a mismatch is reported as damage).
	b, _ := backend.ReadAll(ctx, be, key, 0, -1)
	var m map[string]any
	json.Unmarshal(b, &m)
	m["n"] = 1 << 40
	hostile, _ := json.Marshal(m)
	be.Delete(ctx, key)
	if err := be.Put(ctx, keysPrefix+fileID(hostile).String(), hostile); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, be, testPassword, Options{})
	if err == nil || !strings.Contains(err.Error(), "memory") {
		t.Fatalf("absurd KDF parameters: %v", err)
	}
}

func TestKeys(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t)
	id2, err := r.AddKey(ctx, []byte("second"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, be, []byte("second"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := r2.Keys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	if _, err := r2.RemoveKey(ctx, id2[:8]); err == nil {
		t.Fatal("removed the key in use")
	}
	if _, err := r.RemoveKey(ctx, id2[:8]); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, be, []byte("second"), Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("removed key still opens: %v", err)
	}
}

// flip flips one bit in the middle of an object.
func flip(t testing.TB, be backend.Backend, key string, at func(n int) int) {
	rewrite(t, be, key, func(b []byte) []byte { b[at(len(b))] ^= 0x10; return b })
}

func firstKey(t testing.TB, be backend.Backend, prefix string) string {
	var key string
	be.List(context.Background(), prefix, func(oi backend.ObjectInfo) error {
		if key == "" || oi.Key < key {
			key = oi.Key
		}
		return nil
	})
	if key == "" {
		t.Fatalf("no object under %s", prefix)
	}
	return key
}

// TestCheckFindsDamage flips a bit in each kind of object and expects
// Check to name that object, and nothing else.
func TestCheckFindsDamage(t *testing.T) {
	tests := []struct {
		name     string
		prefix   string
		at       func(n int) int
		readData bool // damage only visible when reading data
		warns    bool // Open without NoIndex warns, naming the object
	}{
		{"pack blob", dataPrefix, func(n int) int { return 100 }, true, false},
		{"pack header", dataPrefix, func(n int) int { return n - 10 }, true, false},
		{"index", indexPrefix, func(n int) int { return n / 2 }, false, true},
		{"snapshot", snapshotPrefix, func(n int) int { return n / 2 }, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, be := newTestRepo(t)
			writeBlobs(t, r, 30)
			key := firstKey(t, be, tc.prefix)
			flip(t, be, key, tc.at)
			opened, err := Open(context.Background(), be, testPassword, Options{})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			var warns string
			damaged := false
			for _, w := range opened.Warnings() {
				warns += w.Error() + "\n"
				damaged = damaged || errors.Is(w, ErrIndexDamaged)
			}
			if tc.warns != strings.Contains(warns, key) || tc.warns && !damaged {
				t.Fatalf("open warned %q; want a warning naming %s as a damaged index file: %v", warns, key, tc.warns)
			}
			opened.Close()
			r2 := reopen(t, be, Options{NoIndex: true})
			res, err := r2.Check(context.Background(), CheckOptions{ReadData: tc.readData})
			if err != nil {
				t.Fatal(err)
			}
			checkBlames(t, res, key)
		})
	}
}

func TestTruncatedPack(t *testing.T) {
	r, be := newTestRepo(t)
	writeBlobs(t, r, 30)
	key := firstKey(t, be, dataPrefix)
	rewrite(t, be, key, func(b []byte) []byte { return b[:len(b)/2] })
	r2 := reopen(t, be, Options{NoIndex: true})
	res, err := r2.Check(context.Background(), CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() {
		t.Fatal("structure check passed a truncated pack")
	}
	checkBlames(t, res, key)
}

// checkBlames requires that check reports the damaged object, and nothing
// else but the snapshot that depends on it (damage to an index file or to
// the pack holding a manifest page is also reported on the snapshot).
func checkBlames(t *testing.T, res *CheckResult, key string) {
	t.Helper()
	named := false
	for _, p := range res.Errors() {
		switch {
		case p.Object == key:
			named = true
		case strings.HasPrefix(p.Object, snapshotPrefix):
		default:
			t.Errorf("unexpected problem: %s", p)
		}
	}
	if !named {
		t.Fatalf("check did not name the damaged %s: %v", key, res.Problems)
	}
}

func TestIndexMerge(t *testing.T) {
	x := newIndex()
	h := newHasher(make([]byte, 32))
	var ids []ID
	for p := range 50 {
		var blobs []PackedBlob
		for i := range 5000 {
			id := h.Sum(fmt.Appendf(nil, "%d/%d", p, i))
			ids = append(ids, id)
			blobs = append(blobs, PackedBlob{Type: BlobData, ID: id, Offset: uint32(i * 100), Length: 100, RawLength: 90})
		}
		x.add(ID{byte(p)}, [32]byte{}, time.Time{}, blobs)
	}
	for i, id := range ids {
		ref, ok := x.Lookup(id)
		if !ok || ref.Pack != (ID{byte(i / 5000)}) || ref.Offset != uint32(i%5000*100) {
			t.Fatalf("lookup %d: %+v %v", i, ref, ok)
		}
	}
	if x.Has(h.Sum([]byte("absent"))) {
		t.Fatal("found an absent ID")
	}
	if x.Len() != len(ids) {
		t.Fatalf("len %d, want %d", x.Len(), len(ids))
	}
}

func TestPageRoundTrip(t *testing.T) {
	entries := []Entry{{Length: 100, ID: ID{1}}, {Length: 1 << 30, Hole: true}, {Length: 5, ID: ID{2}}}
	got, err := DecodePage(EncodePage(entries), 100+1<<30+5)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(entries) {
		t.Fatalf("got %v", got)
	}
	if _, err := DecodePage(EncodePage(entries), 100); err == nil {
		t.Fatal("page of the wrong length accepted")
	}
}

// BenchmarkIndexMemory reports the in-memory index's heap bytes per blob:
// at the worst point while blobs are being added (sorted array plus the map
// of recent entries) and after the final merge.
func BenchmarkIndexMemory(b *testing.B) {
	const n = 1 << 20
	h := newHasher(make([]byte, 32))
	var blobs []PackedBlob
	for i := range n {
		blobs = append(blobs, PackedBlob{Type: BlobData, ID: h.Sum(fmt.Appendf(nil, "%d", i)), Length: 100})
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for b.Loop() {
		before := heap()
		x := newIndex()
		var peak uint64
		for i := 0; i < n; i += 1000 {
			x.add(ID{byte(i >> 10), byte(i >> 18)}, [32]byte{}, time.Time{}, blobs[i:min(i+1000, n)])
			if i%(64<<10) == 0 {
				peak = max(peak, heap()-before)
			}
		}
		peak = max(peak, heap()-before)
		x.finish()
		after := heap() - before
		b.ReportMetric(float64(peak)/n, "peak-bytes/blob")
		b.ReportMetric(float64(after)/n, "bytes/blob")
		runtime.KeepAlive(x)
	}
}

func TestChunkingFixedAtInit(t *testing.T) {
	p := chunk.DefaultParams(0x3DA3358B4DC173)
	p.SegmentSize = 16 << 20
	be := mem.New()
	r, err := Init(context.Background(), be, testPassword, InitOptions{KDF: testKDF, Chunking: &p})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	r2 := reopen(t, be, Options{})
	if r2.Config().Chunking != p {
		t.Fatalf("chunking %+v, want %+v", r2.Config().Chunking, p)
	}
	bad := p
	bad.AvgSize = 3
	if _, err := Init(context.Background(), mem.New(), testPassword, InitOptions{KDF: testKDF, Chunking: &bad}); !errors.Is(err, chunk.ErrInvalidParams) {
		t.Fatalf("bad chunking: %v", err)
	}
}

func TestIncompressible(t *testing.T) {
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog 0123456789\n"), 4000)
	zeros := make([]byte, 200_000)
	mostly := append(randBytes(150_000), text[:50_000]...)
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"random", randBytes(1 << 20), true},
		{"text", text, false},
		{"zeros", zeros, false},
		{"small random", randBytes(10_000), false}, // too small to judge: zstd decides
		{"random then text", mostly, false},        // the last sample is text
	}
	for _, tc := range tests {
		if got := incompressible(tc.b); got != tc.want {
			t.Errorf("%s: incompressible = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPackerBusy: the packer times compression and sealing apart.
func TestPackerBusy(t *testing.T) {
	r, _ := newTestRepo(t)
	h := r.NewHasher()
	p := r.NewPacker(0)
	if c, s := p.Busy(); c != 0 || s != 0 {
		t.Fatalf("new packer busy %v %v", c, s)
	}
	text := bytes.Repeat([]byte("a compressible line of text\n"), 1<<15)
	if _, err := p.Add(BlobData, h.Sum(text), text); err != nil {
		t.Fatal(err)
	}
	c1, s1 := p.Busy()
	if c1 <= 0 || s1 <= 0 {
		t.Fatalf("after a compressible blob: compress %v, seal %v", c1, s1)
	}
	if _, err := p.Finish(); err != nil {
		t.Fatal(err)
	}
	if c2, s2 := p.Busy(); c2 != c1 || s2 <= s1 {
		t.Fatalf("sealing the header: compress %v -> %v, seal %v -> %v", c1, c2, s1, s2)
	}
}
