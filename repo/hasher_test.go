package repo

import (
	"math/rand/v2"
	"testing"

	"github.com/zeebo/blake3"
)

// TestHasherIDsUnchanged: chunk IDs are BLAKE3 keyed with the ID key,
// whichever implementation computes them (blake3x's AVX-512 kernel from
// 9 KiB, zeebo below): a change here would break every repository's
// deduplication and verification.
func TestHasherIDsUnchanged(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var key [32]byte
	for i := range key {
		key[i] = byte(rng.Uint32())
	}
	h := newHasher(key[:])
	buf := make([]byte, 8<<20+12345)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for _, n := range []int{0, 1, 1024, 9<<10 - 1, 9 << 10, 9<<10 + 1, 64 << 10, 512<<10 + 7, 1 << 20, 8<<20 + 12345} {
		for _, off := range []int{0, 1} {
			p := buf[off : off+n-min(n, off)]
			ref, err := blake3.NewKeyed(key[:])
			if err != nil {
				t.Fatal(err)
			}
			ref.Write(p)
			var want ID
			ref.Sum(want[:0])
			if got := h.Sum(p); got != want {
				t.Fatalf("%d bytes at offset %d: ID %s, zeebo's keyed BLAKE3 %s", len(p), off, got.Short(), want.Short())
			}
		}
	}
}
