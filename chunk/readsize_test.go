package chunk

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// TestReadSizeInvariance: the read size and a Sparse source never change
// where cuts fall.
func TestReadSizeInvariance(t *testing.T) {
	p := testParams(t)
	vol := genVolume(11, 30<<20)
	var want string
	for _, rs := range []int{16 << 10, 100 << 10, 1 << 20, 8 << 20} {
		for _, sparse := range []bool{false, true} {
			c, err := NewCutter(p, Options{ReadSize: rs})
			if err != nil {
				t.Fatal(err)
			}
			var src interface {
				ReadAt([]byte, int64) (int, error)
			} = bytes.NewReader(vol)
			if sparse {
				src = &sparseReader{Reader: bytes.NewReader(vol), data: [][2]int64{{0, int64(len(vol))}}}
			}
			var got bytes.Buffer
			for i := int64(0); i < p.Segments(int64(len(vol))); i++ {
				s, e := p.SegmentRange(int64(len(vol)), i)
				if err := c.Cut(context.Background(), src, s, e, func(pc Piece) error {
					fmt.Fprintf(&got, "%d+%d/%v ", pc.Offset, pc.Length, pc.Hole)
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			if want == "" {
				want = got.String()
			} else if got.String() != want {
				t.Fatalf("read size %d sparse %v: cuts differ", rs, sparse)
			}
		}
	}
}
