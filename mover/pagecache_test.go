package mover_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
)

// countingPages counts the pages an import loads: by LoadPage, or read
// as page blobs.
type countingPages struct {
	mover.ImportRepo
	n atomic.Int64
}

func (c *countingPages) LoadPage(ctx context.Context, o *repo.BlobOpener, s *repo.Snapshot, i int) ([]repo.Entry, error) {
	c.n.Add(1)
	return c.ImportRepo.LoadPage(ctx, o, s, i)
}

func (c *countingPages) LoadBlobsInto(ctx context.Context, o *repo.BlobOpener, refs []repo.BlobRef, buf func(i, n int) ([]byte, error), fn func(i int, plain []byte) error) (repo.LoadStats, error) {
	for _, r := range refs {
		if r.Type == repo.BlobPage {
			c.n.Add(1)
		}
	}
	return c.ImportRepo.LoadBlobsInto(ctx, o, refs, buf, fn)
}

// TestImportLoadsIdenticalPagesOnce: a sparse volume's all-hole pages are
// one page; the import fetches it once, not once per segment (issue 18: a
// 4 TiB holes-only volume took 65,537 GETs from S3).
func TestImportLoadsIdenticalPagesOnce(t *testing.T) {
	ctx := context.Background()
	r, _ := testRepo(t, func(p *chunk.Params) { p.SegmentSize = 4 << 20 })
	dir := t.TempDir()
	vol := filepath.Join(dir, "sparse.img")
	const size = 256 << 20 // 64 segments, all holes but the first
	if err := os.WriteFile(vol, []byte("a little data at the start"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(vol, size); err != nil {
		t.Fatal(err)
	}
	src, err := mover.OpenSource(vol, false)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	res, err := mover.Export(ctx, src, r, mover.ExportOptions{Volume: "sparse"})
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[repo.ID]bool{}
	for _, p := range res.Snapshot.Pages {
		distinct[p] = true
	}
	if len(res.Snapshot.Pages) != 64 || len(distinct) != 2 {
		t.Fatalf("%d pages, %d distinct: want 64 and 2", len(res.Snapshot.Pages), len(distinct))
	}
	dst, err := mover.OpenTarget(filepath.Join(dir, "out.img"), size, mover.TargetOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	st := &countingPages{ImportRepo: r}
	if _, err := mover.Import(ctx, st, res.Snapshot, dst, mover.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := st.n.Load(); n != 2 {
		t.Errorf("the import loaded %d pages, want 2 (one per distinct page)", n)
	}
	if hashFile(t, vol, size) != hashFile(t, filepath.Join(dir, "out.img"), size) {
		t.Error("the imported volume differs")
	}
}
