package repo

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// benchBlobs returns n blobs of size bytes: every other one text-like
// (compressible about 3×), the rest random.
func benchBlobs(n, size int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, size)
		if i%2 == 0 {
			var w bytes.Buffer
			for w.Len() < size {
				fmt.Fprintf(&w, "line %d of blob %d: value=%x\n", rng.IntN(1000), i, rng.Uint32()&0xfff)
			}
			copy(b, w.Bytes())
		} else {
			for j := 0; j+8 <= size; j += 8 {
				v := rng.Uint64()
				for k := range 8 {
					b[j+k] = byte(v >> (8 * k))
				}
			}
		}
		out[i] = b
	}
	return out
}

// BenchmarkPackerAdd: compress, seal and check-open one 1 MiB chunk (the
// export's packing stage), half compressible, half random.
func BenchmarkPackerAdd(b *testing.B) {
	r, _ := newTestRepo(b)
	blobs := benchBlobs(8, 1<<20)
	h := r.NewHasher()
	ids := make([]ID, len(blobs))
	for i, bl := range blobs {
		ids[i] = h.Sum(bl)
	}
	p := r.NewPacker(64 << 20)
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := p.Add(BlobData, ids[i%len(blobs)], blobs[i%len(blobs)]); err != nil {
			b.Fatal(err)
		}
		if p.Full() {
			if _, err := p.Finish(); err != nil {
				b.Fatal(err)
			}
		}
		i++
	}
}

// BenchmarkLoadBlobsInto: read a run of sixteen 1 MiB blobs from one pack
// (in memory), decrypt, decompress and verify each into the caller's
// buffers: the import's download workers. Bytes are plaintext bytes.
func BenchmarkLoadBlobsInto(b *testing.B) {
	r, _ := newTestRepo(b)
	ctx := context.Background()
	blobs := benchBlobs(16, 1<<20)
	h := r.NewHasher()
	p := r.NewPacker(64 << 20)
	for _, bl := range blobs {
		if _, err := p.Add(BlobData, h.Sum(bl), bl); err != nil {
			b.Fatal(err)
		}
	}
	pk, err := p.Finish()
	if err != nil {
		b.Fatal(err)
	}
	if err := r.SavePack(ctx, pk); err != nil {
		b.Fatal(err)
	}
	var refs []BlobRef
	for _, bl := range blobs {
		ref, ok := r.Lookup(h.Sum(bl))
		if !ok {
			b.Fatal("blob not indexed")
		}
		refs = append(refs, ref)
	}
	slices.SortFunc(refs, func(x, y BlobRef) int { return cmp.Compare(x.Offset, y.Offset) })
	bufs := make([][]byte, len(refs))
	for i := range bufs {
		bufs[i] = make([]byte, 0, 1<<20)
	}
	var o BlobOpener
	b.SetBytes(int64(len(blobs)) << 20)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.LoadBlobsInto(ctx, &o, refs, func(i, _ int) ([]byte, error) { return bufs[i], nil }, func(int, []byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
