package mover_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockmover/blockmover/bench"
	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/internal/testutil"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend/fs"
)

var testPassword = []byte("test password")

// testRepo creates a repository in a temporary directory. Chunking uses the
// default sizes with a fixed polynomial so runs are comparable.
func testRepo(t testing.TB, mod func(*chunk.Params)) (*repo.Repository, string) {
	t.Helper()
	dir := t.TempDir()
	be, err := fs.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := chunk.DefaultParams(0x3DA3358B4DC173)
	if mod != nil {
		mod(&p)
	}
	r, err := repo.Init(context.Background(), be, testPassword, repo.InitOptions{Chunking: &p, KDF: repo.KDFParams{N: 1 << 10, R: 8, P: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, dir
}

func openRepo(t testing.TB, dir string) *repo.Repository {
	t.Helper()
	be, err := fs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(context.Background(), be, testPassword, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// loopDevice is testutil.LoopDevice: a loop device, or a file where none
// can be had.
func loopDevice(t testing.TB, size int64) string { t.Helper(); return testutil.LoopDevice(t, size) }

// fileCorpus is real file data: Go's source tree and binaries.
func fileCorpus(t testing.TB) *bench.Corpus {
	c, err := bench.NewCorpus(filepath.Join(bench.GoRoot(), "src"), filepath.Join(bench.GoRoot(), "pkg"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fillVolume writes a synthetic volume to path.
func fillVolume(t testing.TB, path string, spec bench.Spec) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := bench.Generate(context.Background(), f, spec, fileCorpus(t)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// fillRandom overwrites path with random bytes (old data on a reused
// target).
func fillRandom(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	fillVolume(t, path, bench.Spec{Size: size, Seed: seed})
}

func hashFile(t testing.TB, path string, size int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
