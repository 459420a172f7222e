// Package gcmx is AES-256-GCM (12-byte nonces, 16-byte tags) with kernels
// for processors that have VAES and VPCLMULQDQ on 512-bit registers: the
// keystream 16 blocks and GHASH 16 blocks per reduction at a time, where
// crypto/cipher's GCM (Go 1.26) runs 8 blocks on 128-bit AES-NI. Elsewhere
// New returns crypto/cipher's GCM. Both produce the same bytes: a sealed
// object is standard AES-256-GCM whichever sealed or opens it (issue 15).
package gcmx

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"unsafe"
)

const (
	// KeySize is the length of an AES-256 key.
	KeySize = 32
	// NonceSize is the length of the nonces Seal and Open take.
	NonceSize = 12
	// TagSize is what Seal appends to the ciphertext.
	TagSize = 16

	blockSize = 16
	rounds    = 14
	rkSize    = (rounds + 1) * blockSize
	htabSize  = 16 * blockSize

	// maxPlain is the longest plaintext GCM allows with a 32-bit block
	// counter: 2^32 - 2 blocks.
	maxPlain = (1<<32 - 2) * blockSize
)

var errOpen = errors.New("gcmx: message authentication failed")

// New returns AES-256-GCM for a 32-byte key: this package's kernels where
// the processor has them, crypto/cipher's GCM elsewhere. The AEAD is safe
// for concurrent use; Seal and Open follow cipher.AEAD's contract (append
// to dst; dst may be the input's storage exactly, must not otherwise
// overlap it).
func New(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("gcmx: key is %d bytes, want %d", len(key), KeySize)
	}
	if !hasKernels() {
		return newStd(key)
	}
	return newGCM(key), nil
}

// Accelerated reports whether New uses this package's kernels on this
// processor.
func Accelerated() bool { return hasKernels() }

func newStd(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("gcmx: %w", err)
	}
	return cipher.NewGCM(b)
}

// gcm is AES-256-GCM on the kernels. It is read-only after newGCM.
type gcm struct {
	rk [rkSize]byte // round keys 0-14, in the byte order AESENC takes
	// htab holds H^16, H^15, ..., H^1: each byte-reversed, read as a
	// little-endian 128-bit number and multiplied by x modulo GHASH's
	// polynomial in that reflected form ("doubled", as crypto/aes's
	// gcmAesInit does for H), so that the kernel's product of a
	// byte-reversed block and an entry is the byte-reversed field product.
	htab [htabSize]byte
}

// newGCM expands key (KeySize bytes) and derives the hash key powers; the
// caller has checked hasKernels.
func newGCM(key []byte) *gcm {
	g := new(gcm)
	expandKey(&g.rk, key)
	var zero, h [blockSize]byte
	ctrXOR(&g.rk, &zero, &h[0], &zero[0], blockSize) // H = E(K, 0^128)
	// htab[i] = H^(16-i). The kernel's single-block path reads only
	// htab[15] (H), so it makes each next power: hashing the block P
	// into a zero state gives P·H.
	p := h
	for i := 15; i >= 0; i-- {
		lo, hi := reflectDouble(fieldFromBytes(p[:]))
		binary.LittleEndian.PutUint64(g.htab[i*blockSize:], lo)
		binary.LittleEndian.PutUint64(g.htab[i*blockSize+8:], hi)
		if i > 0 {
			var next [blockSize]byte
			ghashUpdate(&g.htab, &next, &p[0], blockSize)
			p = next
		}
	}
	return g
}

// expandKey is FIPS 197's key expansion for AES-256, with each word held
// little-endian (its first byte lowest), as AESENC reads round keys from
// memory.
func expandKey(rk *[rkSize]byte, key []byte) {
	var w [4 * (rounds + 1)]uint32
	for i := range 8 {
		w[i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	rcon := uint32(1)
	for i := 8; i < len(w); i++ {
		t := w[i-1]
		switch i % 8 {
		case 0:
			// RotWord moves the first byte last: a right rotation of
			// the little-endian word.
			t = subWord(bits.RotateLeft32(t, -8)) ^ rcon
			rcon <<= 1
		case 4:
			t = subWord(t)
		}
		w[i] = w[i-8] ^ t
	}
	for i, v := range w {
		binary.LittleEndian.PutUint32(rk[4*i:], v)
	}
}

// field is an element of GF(2^128) in GCM's bit order: hi holds bytes 0-7
// of the block big-endian, so the coefficient of x^0 is hi's top bit.
type field struct{ hi, lo uint64 }

func fieldFromBytes(b []byte) field {
	return field{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}
}

// reflectDouble returns the kernel's form of a key power: the block
// byte-reversed as a little-endian 128-bit number (lo, hi) -- which is the
// block read big-endian -- shifted left one bit, with gcmPoly folded in
// when a bit falls off the top.
func reflectDouble(f field) (lo, hi uint64) {
	lo, hi = f.lo, f.hi // the byte-reversed block, read little-endian
	carry := -(hi >> 63)
	hi = hi<<1 | lo>>63
	lo <<= 1
	hi ^= 0xc200000000000000 & carry
	lo ^= 1 & carry
	return lo, hi
}

func (g *gcm) NonceSize() int { return NonceSize }
func (g *gcm) Overhead() int  { return TagSize }

// Seal encrypts and authenticates plaintext and additionalData with nonce
// and appends ciphertext and tag to dst. It panics on a nonce of the wrong
// length, a plaintext over GCM's limit or an inexact overlap, as
// crypto/cipher's GCM does: those are the caller's bugs.
func (g *gcm) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	if len(nonce) != NonceSize {
		panic("gcmx: incorrect nonce length given to GCM")
	}
	if uint64(len(plaintext)) > maxPlain {
		panic("gcmx: message too large for GCM")
	}
	ret, out := sliceForAppend(dst, len(plaintext)+TagSize)
	if inexactOverlap(out, plaintext) {
		panic("gcmx: invalid buffer overlap")
	}
	var ctr [blockSize]byte
	copy(ctr[:], nonce)
	ctr[15] = 2
	if len(plaintext) > 0 {
		ctrXOR(&g.rk, &ctr, &out[0], &plaintext[0], len(plaintext))
	}
	tag := g.tag(nonce, out[:len(plaintext)], additionalData)
	copy(out[len(plaintext):], tag[:])
	return ret
}

// Open authenticates ciphertext (with its tag) and additionalData and,
// only if they authenticate, decrypts into dst: a failed Open writes
// nothing.
func (g *gcm) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != NonceSize {
		panic("gcmx: incorrect nonce length given to GCM")
	}
	if len(ciphertext) < TagSize || uint64(len(ciphertext)) > maxPlain+TagSize {
		return nil, errOpen
	}
	ct, wantTag := ciphertext[:len(ciphertext)-TagSize], ciphertext[len(ciphertext)-TagSize:]
	tag := g.tag(nonce, ct, additionalData)
	if subtle.ConstantTimeCompare(tag[:], wantTag) != 1 {
		return nil, errOpen
	}
	ret, out := sliceForAppend(dst, len(ct))
	if inexactOverlap(out, ciphertext) {
		panic("gcmx: invalid buffer overlap")
	}
	if len(ct) > 0 {
		var ctr [blockSize]byte
		copy(ctr[:], nonce)
		ctr[15] = 2
		ctrXOR(&g.rk, &ctr, &out[0], &ct[0], len(ct))
	}
	return ret, nil
}

// tag returns GCM's tag of ciphertext and aad: GHASH over both (each
// zero-padded) and their bit lengths, XOR the encrypted first counter
// block.
func (g *gcm) tag(nonce, ciphertext, aad []byte) [blockSize]byte {
	var acc [blockSize]byte
	if len(aad) > 0 {
		ghashUpdate(&g.htab, &acc, &aad[0], len(aad))
	}
	if len(ciphertext) > 0 {
		ghashUpdate(&g.htab, &acc, &ciphertext[0], len(ciphertext))
	}
	var lens [blockSize]byte
	binary.BigEndian.PutUint64(lens[:], uint64(len(aad))*8)
	binary.BigEndian.PutUint64(lens[8:], uint64(len(ciphertext))*8)
	ghashUpdate(&g.htab, &acc, &lens[0], blockSize)

	var j0, mask [blockSize]byte
	copy(j0[:], nonce)
	j0[15] = 1
	ctrXOR(&g.rk, &j0, &mask[0], &acc[0], blockSize)
	return mask
}

// sliceForAppend extends in by n bytes, reallocating if its capacity is
// short, and returns the whole and the new tail.
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return head, tail
}

// inexactOverlap reports whether x and y share memory other than at the
// same start (in-place use).
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	return uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}
