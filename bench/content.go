package bench

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// keystream is a seekable stream of pseudo-random bytes: AES-128 in
// counter mode under a key derived from a seed and a label, with the
// counter block at byte position p being p/16. Any range can be computed
// on its own, so a volume's bytes are a pure function of their offset. It is
// safe for concurrent use (cipher.Block is stateless).
type keystream struct{ block cipher.Block }

func newKeystream(seed uint64, label string) keystream {
	sum := sha256.Sum256(fmt.Appendf(nil, "blockmover bench %s %d", label, seed))
	b, err := aes.NewCipher(sum[:16])
	if err != nil {
		// aes.NewCipher fails only for a key length other than 16, 24
		// or 32 bytes; sum[:16] always has 16.
		panic(err)
	}
	return keystream{b}
}

// fill overwrites dst with the stream's bytes at positions [pos, pos+len(dst)).
func (k keystream) fill(dst []byte, pos int64) {
	var iv [aes.BlockSize]byte
	binary.BigEndian.PutUint64(iv[8:], uint64(pos/aes.BlockSize))
	s := cipher.NewCTR(k.block, iv[:])
	if skip := pos % aes.BlockSize; skip > 0 {
		var tmp [aes.BlockSize]byte
		s.XORKeyStream(tmp[:skip], tmp[:skip])
	}
	clear(dst)
	s.XORKeyStream(dst, dst)
}

// Compressible data is made of units of compressUnit bytes aligned to the
// volume: the first k bytes of a unit are random, the rest are drawn from
// two symbols ('A' and 'B', one bit of entropy per byte). zstd compresses
// such data through its entropy coder rather than through matches, so the
// ratio barely depends on the level (default and better gain up to 5% over
// fastest), the data is never all zeros, content-defined chunking cuts it
// like any other data, and its byte entropy is what a real compressible
// file's would be (mover's skip-zstd test looks at entropy).
const compressUnit = 4096

// Bounds of the compressible class's ratio.
const (
	MinRatio     = 1.0
	MaxRatio     = 4.5
	defaultRatio = 2.0
)

// randomPerUnit returns how many random bytes a compressible unit holds for
// a zstd ratio of r (1 ≤ r ≤ 4.75), interpolating a measured table.
func randomPerUnit(r float64) int {
	// ratioAtK[i] is the zstd ratio (fastest level, 1 MiB chunks, as mover
	// compresses) measured with k = i·128 random bytes per unit; it falls
	// monotonically from 4.75 to 1. Measured once with klauspost/compress
	// v1.20.3; TestCompressibleRatio checks it still holds.
	ratioAtK := [...]float64{
		4.7545, 4.1373, 3.7110, 3.3488, 3.0967, 2.8652, 2.6749, 2.5135, 2.3694,
		2.2264, 2.1198, 2.0132, 1.9087, 1.8261, 1.7388, 1.6729, 1.6091, 1.5460,
		1.4834, 1.4230, 1.3926, 1.3338, 1.3048, 1.2484, 1.2206, 1.1931, 1.1397,
		1.1133, 1.0878, 1.0621, 1.0369, 1.0129, 1.0,
	}
	step := float64(compressUnit / (len(ratioAtK) - 1))
	for i := 1; i < len(ratioAtK); i++ {
		hi, lo := ratioAtK[i-1], ratioAtK[i]
		if r >= lo {
			f := (hi - r) / (hi - lo)
			return min(compressUnit, max(0, int((float64(i-1)+f)*step+0.5)))
		}
	}
	return compressUnit
}

// compressible fills dst with compressible bytes at volume offset pos: a
// keystream range, then, in each unit, the bytes past the first k mapped
// to the two symbols (eight at a time).
func compressible(ks keystream, k int, dst []byte, pos int64) {
	ks.fill(dst, pos)
	for i := 0; i < len(dst); {
		at := pos + int64(i)
		inUnit := int(at % compressUnit)
		n := min(len(dst)-i, compressUnit-inUnit)
		if inUnit+n > k {
			from := i + max(0, k-inUnit)
			toSymbols(dst[from : i+n])
		}
		i += n
	}
}

// toSymbols maps each byte of b to 'A' or 'B' by its low bit.
func toSymbols(b []byte) {
	const ones, base = 0x0101010101010101, 0x4141414141414141
	j := 0
	for ; j+8 <= len(b); j += 8 {
		v := binary.LittleEndian.Uint64(b[j:])
		binary.LittleEndian.PutUint64(b[j:], v&ones+base)
	}
	for ; j < len(b); j++ {
		b[j] = b[j]&1 + 'A'
	}
}
