//go:build amd64 && !purego

package gcmx

import "golang.org/x/sys/cpu"

// hasKernels reports whether the processor and the OS support the
// instructions of ctrXOR and ghashUpdate: VAES and VPCLMULQDQ on 512-bit
// registers, AVX-512 F, BW (byte masks, VPSHUFB) and VL (masked 128-bit
// loads), and AES-NI for subWord.
func hasKernels() bool {
	x := cpu.X86
	return x.HasAES && x.HasPCLMULQDQ && x.HasAVX512F && x.HasAVX512BW &&
		x.HasAVX512VL && x.HasAVX512VAES && x.HasAVX512VPCLMULQDQ
}

// subWord applies the AES S-box to each byte of w (AESKEYGENASSIST):
// constant time, unlike a table.
//
//go:noescape
func subWord(w uint32) uint32

// ctrXOR sets dst[:n] to src[:n] XOR the AES-256 keystream of the counter
// blocks *ctr, *ctr+1, ..., where +1 increments the last 32 bits (big
// endian, modulo 2^32) as GCM does. rk holds the 15 round keys. dst and src
// must be n bytes long (n ≥ 0) and may be the same buffer, not otherwise
// overlap. *ctr is not changed.
//
//go:noescape
func ctrXOR(rk *[rkSize]byte, ctr *[blockSize]byte, dst, src *byte, n int)

// ghashUpdate hashes p[:n] into the GHASH state *acc (in GCM's byte
// order), a last partial block zero-padded. htab holds H^16 ... H^1 in the
// kernel's domain (see newGCM).
//
//go:noescape
func ghashUpdate(htab *[htabSize]byte, acc *[blockSize]byte, p *byte, n int)
