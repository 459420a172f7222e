package mover_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockmover/blockmover/bench"
	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/mover"
)

// BenchmarkChunkSizes measures what the chunk size trades: on a 512 MiB
// block-device-like volume (20% zeros, 30% real file data, 30% duplicates
// of earlier data at odd shifts, 20% random), the bytes a full export must
// store (dedup of shifted duplicates), the chunks it indexes, and the bytes
// an incremental export stores after 100 scattered 4 KiB writes (one per
// 5 MiB, as 1,000 writes would be on a 5 GiB volume).
//
//	go test -run XXX -bench ChunkSizes -benchtime 1x ./mover
func BenchmarkChunkSizes(b *testing.B) {
	const size = 512 << 20
	path := filepath.Join(b.TempDir(), "vol.img")
	corpus, err := bench.NewCorpus(bench.DefaultCorpusDirs(bench.GoRoot())...)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bench.GenerateFile(context.Background(), path, bench.Spec{Size: size, Seed: 5, Zero: 0.2, File: 0.3, Duplicate: 0.3, RegionSize: 4 << 20}, corpus, true); err != nil {
		b.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	changed := bytes.Clone(img)
	var ext []changes.Extent
	for range 100 {
		off := rng.Int64N(size/4096) * 4096
		fillRand(rng, changed[off:off+4096])
		ext = append(ext, changes.Extent{Offset: off, Length: 4096})
	}
	list, err := changes.NewChangeList(ext, size)
	if err != nil {
		b.Fatal(err)
	}
	for _, sz := range [][3]int{
		{64 << 10, 256 << 10, 1 << 20},
		{128 << 10, 512 << 10, 2 << 20},
		{256 << 10, 1 << 20, 4 << 20},
		{512 << 10, 1 << 20, 4 << 20},
		{512 << 10, 1 << 20, 8 << 20},
		{1 << 20, 4 << 20, 16 << 20},
	} {
		b.Run(fmt.Sprintf("min%dK-avg%dK-max%dK", sz[0]>>10, sz[1]>>10, sz[2]>>10), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				r, _ := testRepo(b, func(p *chunk.Params) { p.MinSize, p.AvgSize, p.MaxSize = sz[0], sz[1], sz[2] })
				full, err := mover.Export(context.Background(), &memSource{b: img}, r, mover.ExportOptions{Volume: "v"})
				if err != nil {
					b.Fatal(err)
				}
				inc, err := mover.Export(context.Background(), &memSource{b: changed}, r, mover.ExportOptions{Volume: "v", Base: full.Snapshot, Changes: list})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(full.NewBytes)/float64(size-full.ZeroBytes), "new/nonzero")
				b.ReportMetric(float64(full.Chunks), "chunks")
				b.ReportMetric(float64(inc.StoredBytes)/(100*4096), "incr-stored/changed")
				b.ReportMetric(float64(inc.ReadBytes)/(100*4096), "incr-read/changed")
			}
		})
	}
}
