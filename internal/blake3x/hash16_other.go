//go:build !amd64 || purego

package blake3x

// hasAVX512 is false: there is no kernel in assembly for this build.
func hasAVX512() bool { return false }

// hash16 is hash16Generic where there is no kernel in assembly (only tests
// call sum with useWide on these builds).
func hash16(out *[lanes * 32]byte, in []byte, stride, blocks uintptr, key *[8]uint32, ctr *[2 * lanes]uint32, flags, flagsStart, flagsEnd uint32) {
	hash16Generic(out, in, stride, blocks, key, ctr, flags, flagsStart, flagsEnd)
}
