//go:build !amd64 || purego

package gcmx

// hasKernels is false: there are no kernels in assembly for this build, and
// New returns crypto/cipher's GCM.
func hasKernels() bool { return false }

func subWord(w uint32) uint32 { panic("gcmx: no assembly kernels in this build") }

func ctrXOR(rk *[rkSize]byte, ctr *[blockSize]byte, dst, src *byte, n int) {
	panic("gcmx: no assembly kernels in this build")
}

func ghashUpdate(htab *[htabSize]byte, acc *[blockSize]byte, p *byte, n int) {
	panic("gcmx: no assembly kernels in this build")
}
