// Package blake3x computes the BLAKE3 keyed hash of a whole buffer, with a
// 16-lane AVX-512 kernel on amd64 processors that have one.
//
// Sum is bit-identical to github.com/zeebo/blake3's NewKeyed + Write + Sum
// (the project's BLAKE3) for every input. It exists because zeebo's fastest
// path hashes 8 chunks at a time with AVX2, and a repository's chunks
// (512 KiB–8 MiB) are each hashed whole: with AVX-512, 16 chunks of 1 KiB
// are compressed at once, in one pass over the data, and the parent nodes
// of the tree 16 at a time. Inputs shorter than 9 KiB, processors without
// AVX-512F and VL, other architectures and builds with the purego tag use
// zeebo.
package blake3x

import (
	"encoding/binary"

	"github.com/zeebo/blake3"
)

// minWide is the shortest input hashed by the 16-lane kernel. The kernel
// takes about 3 µs for anything from 2 to 16 chunks (it always runs 16
// lanes); zeebo, reusing its hasher, hashes up to 8 KiB in one AVX2 batch
// (2.3 µs at 8 KiB) but 9 to 16 chunks in two (4.1–4.4 µs): BenchmarkSum
// on an AVX-512 Xeon, kernel/zeebo-reused 2.97/2.31 µs at 8 KiB,
// 2.95/4.13 at 10 KiB, 2.98/4.43 at 16 KiB.
const minWide = 9 << 10

// Sum returns the BLAKE3 keyed hash (KEYED_HASH mode, 32-byte output) of p
// under key. It is safe for concurrent use. With the AVX-512 kernel it does
// not allocate; the zeebo fallback allocates one hasher (10,880 bytes) per
// call.
func Sum(key *[32]byte, p []byte) [32]byte {
	return sum(key, p, hasAVX512())
}

// Fast reports whether Sum hashes n bytes with the 16-lane kernel. Where
// it does not, Sum calls zeebo with a new hasher (an allocation), so a
// caller that keeps a zeebo hasher of its own does better with that one.
func Fast(n int) bool { return wide(n, hasAVX512()) }

// sum is Sum with the kernel's use decided by the caller, so that tests
// exercise both paths on one machine. useWide must be false where the
// processor lacks AVX-512F/VL (on amd64 the kernel would fault).
func sum(key *[32]byte, p []byte, useWide bool) [32]byte {
	if wide(len(p), useWide) {
		var kw [8]uint32
		for i := range kw {
			kw[i] = binary.LittleEndian.Uint32(key[4*i:])
		}
		return sumWide(&kw, p)
	}
	return sumZeebo(key, p)
}

// wide reports whether sum hashes n bytes with the 16-lane kernel.
func wide(n int, useWide bool) bool { return useWide && n >= minWide }

// sumZeebo is the fallback: zeebo's keyed hasher, one per call.
func sumZeebo(key *[32]byte, p []byte) [32]byte {
	h, err := blake3.NewKeyed(key[:])
	if err != nil {
		// NewKeyed fails only for a key that is not 32 bytes.
		panic("blake3x: " + err.Error())
	}
	h.Write(p)
	var out [32]byte
	h.Sum(out[:0])
	return out
}
