package mover_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/mover"
)

// Diff lives in package changes, which cannot open devices; these tests run
// it over what mover opens (loop devices, sparse image files answering
// chunk.Sparse), as mover diff does.

// TestDiff compares loop devices: changes at the edges, in the middle, a
// change to zeros, and a larger target.
func TestDiff(t *testing.T) {
	const size = 24 << 20
	a := loopDevice(t, size)
	fillRandom(t, a, size, 1)
	b := filepath.Join(t.TempDir(), "b.img")
	data, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	data[0] ^= 1
	data[size-1] ^= 1
	clear(data[5<<20 : 5<<20+100_000])
	data[9<<20+65535] ^= 0xff
	data = append(data, make([]byte, 4096)...) // the target grew
	if err := os.WriteFile(b, data, 0o600); err != nil {
		t.Fatal(err)
	}
	base, err := mover.OpenSource(a, false)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	target, err := mover.OpenSource(b, false)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	cl, err := changes.Diff(context.Background(), base, target, changes.DiffOptions{BlockSize: 64 << 10, ReadSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	const k = 64 << 10
	want := []changes.Extent{{Offset: 0, Length: k}, {Offset: 5 << 20, Length: 2 * k}, {Offset: 9<<20 + 0, Length: k}, {Offset: size - k, Length: k + 4096}}
	if len(cl) != len(want) {
		t.Fatalf("diff: %v, want %v", cl, want)
	}
	for i := range want {
		if cl[i] != want[i] {
			t.Fatalf("diff: %v, want %v", cl, want)
		}
	}
	if _, err := changes.Diff(context.Background(), target, base, changes.DiffOptions{}); err == nil {
		t.Fatal("diff against a smaller target succeeded")
	}
}

// TestDiffLoopDevices compares two real block devices (files where loop
// devices cannot be had), opened as mover diff opens them.
func TestDiffLoopDevices(t *testing.T) {
	const size = 16 << 20
	a, b := loopDevice(t, size), loopDevice(t, size)
	fillRandom(t, a, size, 11)
	data := make([]byte, size)
	src, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.ReadAt(data, 0); err != nil {
		t.Fatal(err)
	}
	src.Close()
	data[0] ^= 1                          // first byte
	data[size-1] ^= 1                     // last byte
	clear(data[3<<20+100 : 3<<20+70_000]) // a run that became zeros, over two blocks
	data[8<<20] ^= 0x40                   // first byte of a block
	data[8<<20-1] ^= 0x40                 // last byte of the block before
	diffWriteFile(t, b, data)

	base, err := mover.OpenSource(a, true)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	target, err := mover.OpenSource(b, true)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	const k = 64 << 10
	got, err := changes.Diff(context.Background(), base, target, changes.DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := changes.ChangeList{{Offset: 0, Length: k}, {Offset: 3 << 20, Length: 2 * k}, {Offset: 8<<20 - k, Length: 2 * k}, {Offset: size - k, Length: k}}
	if !slices.Equal(got, want) {
		t.Fatalf("Diff = %v, want %v", got, want)
	}
	if base.ReadBytes() != size || target.ReadBytes() != size {
		t.Errorf("read %d and %d bytes of %d", base.ReadBytes(), target.ReadBytes(), size)
	}
	// 4 KiB blocks find the edits to within a page.
	got, err = changes.Diff(context.Background(), base, target, changes.DiffOptions{BlockSize: 4096, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	want = changes.ChangeList{{Offset: 0, Length: 4096}, {Offset: 3 << 20, Length: 18 * 4096}, {Offset: 8<<20 - 4096, Length: 2 * 4096}, {Offset: size - 4096, Length: 4096}}
	if !slices.Equal(got, want) {
		t.Fatalf("Diff with 4 KiB blocks = %v, want %v", got, want)
	}
	// A device against itself.
	got, err = changes.Diff(context.Background(), base, base, changes.DiffOptions{})
	if err != nil || len(got) != 0 {
		t.Fatalf("Diff of a device with itself = %v, %v", got, err)
	}
}

func diffWriteFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDiffFiles: image files (sparse and not) compare like devices.
func TestDiffFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	const size = 5<<20 + 512
	// a is sparse; b holds the same zeros written out, plus one change.
	if err := os.WriteFile(a, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(a, size); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	data[size-1] = 1
	if err := os.WriteFile(b, data, 0o600); err != nil {
		t.Fatal(err)
	}
	base, err := mover.OpenSource(a, false)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	target, err := mover.OpenSource(b, false)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	got, err := changes.Diff(context.Background(), base, target, changes.DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (changes.ChangeList{{Offset: 5 << 20, Length: 512}}); !slices.Equal(got, want) {
		t.Fatalf("Diff = %v, want %v", got, want)
	}
}

// sparseCounter is a device that counts the bytes read through it and
// still answers chunk.Sparse.
type sparseCounter struct {
	*mover.Device
	n atomic.Int64
}

func (c *sparseCounter) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.Device.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// TestDiffSkipsSharedHoles: ranges that are holes in both sparse files
// are not read, and the answer is what comparing every byte gives.
func TestDiffSkipsSharedHoles(t *testing.T) {
	dir := t.TempDir()
	const size = 256 << 20
	paths := []string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")}
	data := bytes.Repeat([]byte("data"), 1<<18) // 1 MiB
	for i, p := range paths {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		// Both hold data at 16 MiB; only b at 100 MiB; only a at 200 MiB.
		offs := map[int][]int64{0: {16 << 20, 200 << 20}, 1: {16 << 20, 100 << 20}}[i]
		for _, off := range offs {
			if _, err := f.WriteAt(data, off); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
	var srcs [2]*sparseCounter
	for i, p := range paths {
		d, err := mover.OpenSource(p, false)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		srcs[i] = &sparseCounter{Device: d}
	}
	got, err := changes.Diff(t.Context(), srcs[0], srcs[1], changes.DiffOptions{ReadSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	want := changes.ChangeList{{Offset: 100 << 20, Length: 1 << 20}, {Offset: 200 << 20, Length: 1 << 20}}
	if !slices.Equal(got, want) {
		t.Fatalf("Diff = %v, want %v", got, want)
	}
	// Three 4 MiB read ranges hold data in either file; each is read
	// from both.
	for i, s := range srcs {
		if n := s.n.Load(); n != 3*4<<20 {
			t.Errorf("source %d: read %d bytes, want %d (holes both share read)", i, n, 3*4<<20)
		}
	}
}
