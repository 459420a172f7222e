package fs

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// alignedSlice returns n bytes of random data whose first byte is at an
// address that is a multiple of al, plus skew.
func alignedSlice(n, al, skew int) []byte {
	raw := make([]byte, n+2*al)
	off := (al - addrOf(raw)%al) % al
	b := raw[off+skew : off+skew+n]
	r := rand.New(rand.NewPCG(uint64(n), uint64(skew)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestWriteDataDirect writes objects around the direct-write threshold,
// aligned and not, and reads them back: the bytes are the same whichever
// way they went, and on a file system with direct I/O every aligned block
// of a large aligned object went around the page cache.
func TestWriteDataDirect(t *testing.T) {
	dir := t.TempDir()
	probe, err := os.Create(filepath.Join(dir, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	al := directAlign(probe)
	probe.Close()
	if al == 0 {
		t.Logf("%s has no direct I/O: only the page-cache path is tested", dir)
	}
	for _, n := range []int{0, 5, directMin - 1, directMin, directMin + 1, directMin + 4095, 3*directMin + 123} {
		for _, skew := range []int{0, 1} {
			data := alignedSlice(n, max(al, 4096), skew)
			name := filepath.Join(dir, "obj")
			f, err := os.Create(name)
			if err != nil {
				t.Fatal(err)
			}
			direct, err := writeData(f, data)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatalf("%d bytes, skew %d: %v", n, skew, err)
			}
			want := 0
			if al > 0 && n >= directMin && skew == 0 {
				want = n / al * al
			}
			if direct != want {
				t.Errorf("%d bytes, skew %d: %d bytes written directly, want %d (alignment %d)", n, skew, direct, want, al)
			}
			got, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("%d bytes, skew %d: read back %d bytes that differ", n, skew, len(got))
			}
			os.Remove(name)
		}
	}
}

// TestWriteDataTmpfs: a file in memory is never written directly (it would
// be copied into memory all the same).
func TestWriteDataTmpfs(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "fs-write-test-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	defer os.RemoveAll(dir)
	f, err := os.Create(filepath.Join(dir, "obj"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if al := directAlign(f); al != 0 {
		t.Fatalf("tmpfs: direct alignment %d, want 0", al)
	}
	data := alignedSlice(2*directMin, 4096, 0)
	if direct, err := writeData(f, data); err != nil || direct != 0 {
		t.Fatalf("tmpfs: %d bytes written directly, err %v; want 0, nil", direct, err)
	}
}

// BenchmarkWriteData writes and fsyncs 16 MiB objects (a pack) into the
// test's temporary directory: "direct" with aligned memory (O_DIRECT where
// the file system has it), "buffered" one byte off alignment, which takes
// the page-cache path. cpu-ns/op is the process's user and system CPU
// time per object: on a shared machine it is steadier than wall time.
func BenchmarkWriteData(b *testing.B) {
	const size = 16 << 20
	for _, c := range []struct {
		name string
		skew int
	}{{"direct", 0}, {"buffered", 1}} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			data := alignedSlice(size, 4096, c.skew)
			name := filepath.Join(dir, "obj")
			b.SetBytes(size)
			cpu0 := cpuTime()
			for b.Loop() {
				f, err := os.Create(name)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := writeData(f, data); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				f.Close()
				os.Remove(name)
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user plus system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
