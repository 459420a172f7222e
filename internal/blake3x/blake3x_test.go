package blake3x

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/zeebo/blake3"
)

func randBytes(r *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

func randKey(r *rand.Rand) *[32]byte {
	var k [32]byte
	copy(k[:], randBytes(r, 32))
	return &k
}

// wideOK reports whether the wide path may run here: always with the Go
// kernel, with the assembly one only on AVX-512.
func wideOK() bool {
	return hasAVX512() || runtime.GOARCH != "amd64" || purego
}

// check compares sum's two paths with zeebo's keyed hash.
func check(t *testing.T, key *[32]byte, p []byte) {
	t.Helper()
	want := sumZeebo(key, p)
	if got := Sum(key, p); got != want {
		t.Fatalf("Sum of %d bytes = %x, zeebo %x", len(p), got, want)
	}
	if wideOK() {
		var kw [8]uint32
		for i := range kw {
			kw[i] = uint32(key[4*i]) | uint32(key[4*i+1])<<8 | uint32(key[4*i+2])<<16 | uint32(key[4*i+3])<<24
		}
		if got := sumWide(&kw, p); got != want {
			t.Fatalf("sumWide of %d bytes = %x, zeebo %x", len(p), got, want)
		}
		if got := sum(key, p, true); got != want {
			t.Fatalf("sum(useWide) of %d bytes = %x, zeebo %x", len(p), got, want)
		}
	}
}

// TestSumAllLengths covers every length up to 20000 (Sum's zeebo path
// below minWide, and sumWide, valid for any length, throughout), then every
// length around the group and kernel boundaries.
func TestSumAllLengths(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	key := randKey(r)
	data := randBytes(r, 3*groupLen+5*chunkLen)
	for n := 0; n <= 20000; n++ {
		check(t, key, data[:n])
	}
	for _, base := range []int{minWide, 16 * chunkLen, 17 * chunkLen, 32 * chunkLen, groupLen, 2 * groupLen, 3 * groupLen, 3*groupLen + 5*chunkLen} {
		for d := -2; d <= 2; d++ {
			if n := base + d; n <= len(data) {
				check(t, key, data[:n])
			}
		}
	}
}

// TestSumRandom compares random lengths up to 4 MiB under random keys,
// on unaligned slices too.
func TestSumRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	data := randBytes(r, 4<<20+1)
	iters := 200
	if testing.Short() {
		iters = 20
	}
	for range iters {
		n := r.IntN(4 << 20)
		check(t, randKey(r), data[:n])
		check(t, randKey(r), data[1:n+1])
	}
	for _, n := range []int{1 << 20, 4 << 20, 8<<20 + 12345} {
		p := randBytes(r, n+1)
		check(t, randKey(r), p[:n])
		check(t, randKey(r), p[1:])
	}
}

// TestHash16 compares the kernel with hash16Generic for chunks and
// parents, at counters that carry into the high word.
func TestHash16(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	in := randBytes(r, lanes*chunkLen+1)
	var key [8]uint32
	for i := range key {
		key[i] = r.Uint32()
	}
	for _, c := range []uint64{0, 1<<32 - 7, 1 << 40} {
		for _, tc := range []struct {
			stride, blocks    uintptr
			flags, start, end uint32
		}{
			{chunkLen, 16, flagKeyedHash, flagChunkStart, flagChunkEnd},
			{64, 1, flagKeyedHash | flagParent, 0, 0},
			{chunkLen, 1, flagKeyedHash, flagChunkStart, flagChunkEnd},
			{100, 3, 0, flagChunkStart, flagChunkEnd},
		} {
			for _, off := range []int{0, 1} {
				ctr := counters(c)
				var got, want [lanes * 32]byte
				n := (lanes-1)*int(tc.stride) + int(tc.blocks)*blockLen
				hash16(&got, in[off:off+n], tc.stride, tc.blocks, &key, &ctr, tc.flags, tc.start, tc.end)
				hash16Generic(&want, in[off:off+n], tc.stride, tc.blocks, &key, &ctr, tc.flags, tc.start, tc.end)
				if got != want {
					t.Fatalf("counter %d %+v offset %d: kernel differs from hash16Generic", c, tc, off)
				}
			}
		}
	}
}

// TestSumWidePathTaken fails where the processor has AVX-512F and VL (per
// /proc/cpuinfo) but Sum would not use the kernel for a chunk-sized input.
func TestSumWidePathTaken(t *testing.T) {
	if runtime.GOARCH != "amd64" || runtime.GOOS != "linux" || purego {
		t.Skip("the kernel is for linux/amd64 builds without purego")
	}
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	var flags []string
	for line := range strings.Lines(string(info)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags = strings.Fields(v)
			break
		}
	}
	has := func(f string) bool {
		for _, g := range flags {
			if g == f {
				return true
			}
		}
		return false
	}
	if !has("avx512f") || !has("avx512vl") {
		t.Skip("no AVX-512F/VL here")
	}
	if !hasAVX512() {
		t.Fatal("hasAVX512 is false on a processor with AVX-512F and VL")
	}
	for _, n := range []int{minWide, 512 << 10, 1 << 20, 8 << 20} {
		if !wide(n, hasAVX512()) {
			t.Errorf("Sum of %d bytes does not use the kernel", n)
		}
	}
}

func TestSumAllocs(t *testing.T) {
	if !hasAVX512() {
		t.Skip("zeebo's fallback allocates its hasher")
	}
	var key [32]byte
	p := make([]byte, 1<<20+333)
	if n := testing.AllocsPerRun(20, func() { Sum(&key, p) }); n != 0 {
		t.Errorf("Sum allocates %v times per call", n)
	}
}

func FuzzSum(f *testing.F) {
	f.Add([]byte("key"), []byte(""))
	f.Add([]byte("another key"), bytes.Repeat([]byte{7}, 2*minWide+1))
	f.Fuzz(func(t *testing.T, k, p []byte) {
		var key [32]byte
		copy(key[:], k)
		check(t, &key, p)
	})
}

var sizes = []int{64, 1 << 10, 4 << 10, 8 << 10, 10 << 10, 16 << 10, 64 << 10, 512 << 10, 1 << 20, 4 << 20}

func BenchmarkSum(b *testing.B) {
	var key [32]byte
	for _, n := range sizes {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i * 7)
		}
		for _, path := range []struct {
			name string
			fn   func() [32]byte
		}{
			{"blake3x", func() [32]byte { return Sum(&key, p) }},
			{"zeebo", func() [32]byte { return sumZeebo(&key, p) }},
		} {
			b.Run(fmt.Sprintf("%s/%dB", path.name, n), func(b *testing.B) {
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					path.fn()
				}
			})
		}
		// zeebo-reused is repo.Hasher's way: one keyed hasher, Reset
		// before each input (no allocation, not safe for concurrent use).
		b.Run(fmt.Sprintf("zeebo-reused/%dB", n), func(b *testing.B) {
			h, err := blake3.NewKeyed(key[:])
			if err != nil {
				b.Fatal(err)
			}
			var out [32]byte
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				h.Reset()
				h.Write(p)
				h.Sum(out[:0])
			}
		})
		if hasAVX512() {
			b.Run(fmt.Sprintf("wide/%dB", n), func(b *testing.B) {
				b.SetBytes(int64(n))
				var kw [8]uint32
				for b.Loop() {
					sumWide(&kw, p)
				}
			})
		}
	}
}

// TestSumConcurrent hashes from several goroutines at once (run with
// -race): Sum keeps no state between calls.
func TestSumConcurrent(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	key := randKey(r)
	inputs := make([][]byte, 8)
	want := make([][32]byte, len(inputs))
	for i := range inputs {
		inputs[i] = randBytes(r, 100<<10+i*37<<10+i)
		want[i] = sumZeebo(key, inputs[i])
	}
	errs := make(chan error, len(inputs))
	for i := range inputs {
		go func() {
			for range 20 {
				if got := Sum(key, inputs[i]); got != want[i] {
					errs <- fmt.Errorf("input %d: %x, want %x", i, got, want[i])
					return
				}
			}
			errs <- nil
		}()
	}
	for range inputs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
