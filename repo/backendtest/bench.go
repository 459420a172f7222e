package backendtest

import (
	"fmt"
	"io"
	"testing"

	"github.com/blockmover/blockmover/repo/backend"
)

// benchSizes are the object sizes benchmarked: small metadata objects, and
// the 16–64 MiB packs that carry the data.
func benchSizes() []int { return []int{4 << 10, 1 << 20, 16 << 20, 64 << 20} }

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// Bench runs Put and Get benchmarks on fresh backends from newBackend, with
// b.SetBytes (so results read as throughput) and b.ReportAllocs. Put
// benchmarks delete what they stored, untimed, every 256 MiB. Get reads
// into a reused buffer with io.ReadFull, as a pack reader does.
func Bench(b *testing.B, newBackend func(b *testing.B) backend.Backend) {
	for _, size := range benchSizes() {
		b.Run("Put/"+sizeName(size), func(b *testing.B) { benchPut(b, newBackend(b), size) })
	}
	for _, size := range benchSizes() {
		b.Run("Get/"+sizeName(size), func(b *testing.B) { benchGet(b, newBackend(b), size) })
	}
	b.Run("GetRange/4KiB-of-64MiB", func(b *testing.B) { benchGetRange(b, newBackend(b), 64<<20, 4<<10) })
}

func closeBench(b *testing.B, be backend.Backend) {
	b.Cleanup(func() {
		if err := be.Close(); err != nil {
			b.Errorf("Close: %v", err)
		}
	})
}

func benchPut(b *testing.B, be backend.Backend, size int) {
	closeBench(b, be)
	ctx := b.Context()
	data := randomData(1, size)
	const budget = 256 << 20
	var keys []string
	b.SetBytes(int64(size))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if (len(keys)+1)*size > budget {
			b.StopTimer()
			for _, key := range keys {
				if err := be.Delete(ctx, key); err != nil {
					b.Fatalf("Delete: %v", err)
				}
			}
			keys = keys[:0]
			b.StartTimer()
		}
		key := fmt.Sprintf("data/%02x/%016x", i%256, i)
		i++
		if err := be.Put(ctx, key, data); err != nil {
			b.Fatalf("Put: %v", err)
		}
		keys = append(keys, key)
	}
}

func benchGet(b *testing.B, be backend.Backend, size int) {
	closeBench(b, be)
	ctx := b.Context()
	const key = "data/ab/bench"
	put(b, be, key, randomData(2, size))
	buf := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		rc, err := be.Get(ctx, key, 0, -1)
		if err != nil {
			b.Fatalf("Get: %v", err)
		}
		_, err = io.ReadFull(rc, buf)
		rc.Close()
		if err != nil {
			b.Fatalf("read: %v", err)
		}
	}
}

func benchGetRange(b *testing.B, be backend.Backend, size, n int) {
	closeBench(b, be)
	ctx := b.Context()
	const key = "data/ab/bench"
	put(b, be, key, randomData(3, size))
	buf := make([]byte, n)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		off := int64(i*7919*n) % int64(size-n)
		i++
		rc, err := be.Get(ctx, key, off, int64(n))
		if err != nil {
			b.Fatalf("Get: %v", err)
		}
		_, err = io.ReadFull(rc, buf)
		rc.Close()
		if err != nil {
			b.Fatalf("read: %v", err)
		}
	}
}
