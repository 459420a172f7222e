// Package scryptx is the scrypt key derivation function (RFC 7914), the
// same function as golang.org/x/crypto/scrypt, with its large array in
// huge pages.
//
// Why (issue 15): every command that opens a repository derives a key
// from the password with scrypt (N=2^15, r=8: a 32 MiB array, written
// once in order and read back at random). x/crypto allocates that array
// on the Go heap, fresh memory for a new process, and on the project's
// paravirtualised guest its 8,192 page faults cost more than the hashing:
// the first call in a process took 180–210 ms, a later call reusing the
// heap's memory 63 ms. Here the array is one mapping of huge pages
// (internal/hugemem), 16 faults, unmapped when the call returns.
package scryptx

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"unsafe"

	"github.com/blockmover/blockmover/internal/hugemem"
)

// hugeFrom is the smallest array put in huge pages; smaller ones are on
// the Go heap, where a huge page would be mostly wasted.
const hugeFrom = hugemem.PageSize

// Key derives a key of keyLen bytes from password and salt with cost
// parameters N (a power of two above 1), r and p (r·p < 2^30), as RFC
// 7914 defines it. It needs 128·N·r bytes of memory for the duration of
// the call, and returns an error, never panics, for parameters out of
// range. It is safe for concurrent use.
func Key(password, salt []byte, N, r, p, keyLen int) ([]byte, error) {
	if N <= 1 || N&(N-1) != 0 {
		return nil, fmt.Errorf("scrypt: N=%d is not a power of two above 1", N)
	}
	if r < 1 || p < 1 || uint64(r)*uint64(p) >= 1<<30 {
		return nil, fmt.Errorf("scrypt: r=%d p=%d out of range", r, p)
	}
	if keyLen < 1 {
		return nil, fmt.Errorf("scrypt: key length %d", keyLen)
	}
	hi, lo := bits.Mul64(uint64(N), 128*uint64(r))
	if hi != 0 || lo > uint64(maxInt) || 128*uint64(r)*uint64(p) > uint64(maxInt) {
		return nil, fmt.Errorf("scrypt: N=%d r=%d p=%d needs more memory than can be addressed", N, r, p)
	}
	words := 32 * r // of one block B_i, in 32-bit words
	var v []uint32  // N blocks
	if vb := int(lo); vb >= hugeFrom {
		b, err := hugemem.Alloc(vb)
		if err != nil {
			return nil, fmt.Errorf("scrypt: %w", err)
		}
		defer hugemem.Free(b) //nolint:errcheck // unmapping what Alloc mapped fails only for a bad buffer
		v = unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(b))), vb/4)
	} else {
		v = make([]uint32, N*words)
	}

	b, err := pbkdf2.Key(sha256.New, string(password), salt, 1, p*128*r)
	if err != nil {
		return nil, fmt.Errorf("scrypt: %w", err)
	}
	x := make([]uint32, 2*words) // X, then the block mix's output Y
	for i := 0; i < p; i++ {
		roMix(b[i*128*r:(i+1)*128*r], x, v, N, r)
	}
	k, err := pbkdf2.Key(sha256.New, string(password), b, 1, keyLen)
	if err != nil {
		return nil, fmt.Errorf("scrypt: %w", err)
	}
	return k, nil
}

const maxInt = int(^uint(0) >> 1)

// roMix is scryptROMix: it replaces block (128·r bytes) with its mix, using
// xy (64·r words) and v (32·r·N words) as scratch.
func roMix(block []byte, xy, v []uint32, N, r int) {
	words := 32 * r
	x, y := xy[:words], xy[words:]
	for i := range x {
		x[i] = binary.LittleEndian.Uint32(block[4*i:])
	}
	for i := 0; i < N; i++ {
		copy(v[i*words:(i+1)*words], x)
		blockMix(x, y, r)
		x, y = y, x
	}
	mask := uint64(N - 1)
	for i := 0; i < N; i++ {
		j := int(integerify(x, r) & mask)
		xorInto(x, v[j*words:(j+1)*words])
		blockMix(x, y, r)
		x, y = y, x
	}
	for i, w := range x {
		binary.LittleEndian.PutUint32(block[4*i:], w)
	}
}

// integerify is the first 64 bits, little endian, of x's last 64-byte
// part.
func integerify(x []uint32, r int) uint64 {
	k := (2*r - 1) * 16
	return uint64(x[k]) | uint64(x[k+1])<<32
}

// xorInto sets x to x ⊕ w (equal lengths).
func xorInto(x, w []uint32) {
	w = w[:len(x)]
	for i := range x {
		x[i] ^= w[i]
	}
}

// blockMix is scryptBlockMix: it writes the mix of in (2r parts of 16
// words) to out, the even parts' results first, then the odd ones'.
func blockMix(in, out []uint32, r int) {
	var t [16]uint32
	copy(t[:], in[(2*r-1)*16:])
	for i := 0; i < 2*r; i++ {
		salsa8XOR(&t, (*[16]uint32)(in[i*16:]))
		o := (i/2 + (i&1)*r) * 16
		copy(out[o:o+16], t[:])
	}
}

// salsa8XOR sets t to Salsa20/8(t ⊕ in).
func salsa8XOR(t *[16]uint32, in *[16]uint32) {
	w0, w1, w2, w3 := t[0]^in[0], t[1]^in[1], t[2]^in[2], t[3]^in[3]
	w4, w5, w6, w7 := t[4]^in[4], t[5]^in[5], t[6]^in[6], t[7]^in[7]
	w8, w9, w10, w11 := t[8]^in[8], t[9]^in[9], t[10]^in[10], t[11]^in[11]
	w12, w13, w14, w15 := t[12]^in[12], t[13]^in[13], t[14]^in[14], t[15]^in[15]
	x0, x1, x2, x3, x4, x5, x6, x7 := w0, w1, w2, w3, w4, w5, w6, w7
	x8, x9, x10, x11, x12, x13, x14, x15 := w8, w9, w10, w11, w12, w13, w14, w15
	for range 4 { // four double rounds: eight rounds
		// Columns.
		x4 ^= bits.RotateLeft32(x0+x12, 7)
		x8 ^= bits.RotateLeft32(x4+x0, 9)
		x12 ^= bits.RotateLeft32(x8+x4, 13)
		x0 ^= bits.RotateLeft32(x12+x8, 18)
		x9 ^= bits.RotateLeft32(x5+x1, 7)
		x13 ^= bits.RotateLeft32(x9+x5, 9)
		x1 ^= bits.RotateLeft32(x13+x9, 13)
		x5 ^= bits.RotateLeft32(x1+x13, 18)
		x14 ^= bits.RotateLeft32(x10+x6, 7)
		x2 ^= bits.RotateLeft32(x14+x10, 9)
		x6 ^= bits.RotateLeft32(x2+x14, 13)
		x10 ^= bits.RotateLeft32(x6+x2, 18)
		x3 ^= bits.RotateLeft32(x15+x11, 7)
		x7 ^= bits.RotateLeft32(x3+x15, 9)
		x11 ^= bits.RotateLeft32(x7+x3, 13)
		x15 ^= bits.RotateLeft32(x11+x7, 18)
		// Rows.
		x1 ^= bits.RotateLeft32(x0+x3, 7)
		x2 ^= bits.RotateLeft32(x1+x0, 9)
		x3 ^= bits.RotateLeft32(x2+x1, 13)
		x0 ^= bits.RotateLeft32(x3+x2, 18)
		x6 ^= bits.RotateLeft32(x5+x4, 7)
		x7 ^= bits.RotateLeft32(x6+x5, 9)
		x4 ^= bits.RotateLeft32(x7+x6, 13)
		x5 ^= bits.RotateLeft32(x4+x7, 18)
		x11 ^= bits.RotateLeft32(x10+x9, 7)
		x8 ^= bits.RotateLeft32(x11+x10, 9)
		x9 ^= bits.RotateLeft32(x8+x11, 13)
		x10 ^= bits.RotateLeft32(x9+x8, 18)
		x12 ^= bits.RotateLeft32(x15+x14, 7)
		x13 ^= bits.RotateLeft32(x12+x15, 9)
		x14 ^= bits.RotateLeft32(x13+x12, 13)
		x15 ^= bits.RotateLeft32(x14+x13, 18)
	}
	t[0], t[1], t[2], t[3] = x0+w0, x1+w1, x2+w2, x3+w3
	t[4], t[5], t[6], t[7] = x4+w4, x5+w5, x6+w6, x7+w7
	t[8], t[9], t[10], t[11] = x8+w8, x9+w9, x10+w10, x11+w11
	t[12], t[13], t[14], t[15] = x12+w12, x13+w13, x14+w14, x15+w15
}
