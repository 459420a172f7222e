package chunk

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/restic/chunker"
)

// BenchmarkResticChunker is the reference: restic/chunker's own loop over
// the same data as BenchmarkCutRandom.
func BenchmarkResticChunker(b *testing.B) {
	vol := make([]byte, 128<<20)
	r := rand.New(rand.NewPCG(1, 1))
	for i := 0; i+8 <= len(vol); i += 8 {
		binary.LittleEndian.PutUint64(vol[i:], r.Uint64())
	}
	p := DefaultParams(testPol)
	buf := make([]byte, p.MaxSize)
	b.SetBytes(int64(len(vol)))
	for b.Loop() {
		ch := chunker.NewWithBoundaries(bytes.NewReader(vol), chunker.Pol(testPol), uint(p.MinSize), uint(p.MaxSize))
		for {
			if _, err := ch.Next(buf); err == io.EOF {
				break
			}
		}
	}
}
