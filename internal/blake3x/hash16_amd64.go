//go:build amd64 && !purego

package blake3x

import "golang.org/x/sys/cpu"

//go:generate go run ./gen -out hash16_amd64.s

// hasAVX512 reports whether the processor and the OS support the
// instructions of hash16AVX512 (AVX-512F; VL is required too, as every
// AVX-512 processor but Knights Landing has it).
func hasAVX512() bool { return cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL }

// hash16AVX512 is hash16Generic in assembly; in points at lane 0's first
// block and must have 15*stride + 64*blocks readable bytes.
//
//go:noescape
func hash16AVX512(out *[lanes * 32]byte, in *byte, stride uintptr, blocks uintptr, key *[8]uint32, ctr *[2 * lanes]uint32, flags uint32, flagsStart uint32, flagsEnd uint32)

// hash16 is hash16Generic with the AVX-512 kernel: the caller must have
// checked hasAVX512.
func hash16(out *[lanes * 32]byte, in []byte, stride, blocks uintptr, key *[8]uint32, ctr *[2 * lanes]uint32, flags, flagsStart, flagsEnd uint32) {
	_ = in[(lanes-1)*stride+blocks*blockLen-1] // the kernel reads this far
	hash16AVX512(out, &in[0], stride, blocks, key, ctr, flags, flagsStart, flagsEnd)
}
