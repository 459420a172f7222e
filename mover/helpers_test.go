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
	"github.com/blockmover/blockmover/repo/repotest"
)

var testPassword = repotest.Password()

// testRepo creates a repository in a temporary directory (repotest): the
// default sizes with a fixed polynomial, changed by mod, so runs are
// comparable.
func testRepo(t testing.TB, mod func(*chunk.Params)) (*repo.Repository, string) {
	t.Helper()
	be, dir := repotest.Dir(t, "")
	return repotest.Init(t, be, repo.InitOptions{Chunking: repotest.Chunking(mod)}), dir
}

func openRepo(t testing.TB, dir string) *repo.Repository {
	t.Helper()
	return repotest.Open(t, repotest.OpenDir(t, dir), repo.Options{})
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

// fillVolume writes a synthetic volume to path (bench.GenerateFile).
func fillVolume(t testing.TB, path string, spec bench.Spec) {
	t.Helper()
	if _, err := bench.GenerateFile(context.Background(), path, spec, fileCorpus(t), false); err != nil {
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
