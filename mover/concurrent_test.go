package mover_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
)

// TestConcurrentExportsWithGC: four exports of overlapping volumes run at
// once into one repository, each through its own Repository (as separate
// Jobs would), while gc runs in a loop beside them. The data they share was
// forgotten just before, so gc condemns and deletes it while the exports
// deduplicate against it: the grace period must protect them. Every
// snapshot then passes check --read-data and imports byte-identically, and
// the exports stored only what was new.
func TestConcurrentExportsWithGC(t *testing.T) {
	if testing.Short() {
		t.Skip("concurrency soak skipped in -short mode")
	}
	ctx := context.Background()
	const size = 64 << 20
	const grace = 3 * time.Second
	r0, dir := testRepo(t, nil)
	rng := rand.New(rand.NewPCG(11, 12))
	// "shared" stays: the four volumes deduplicate against it. "forgotten"
	// is forgotten just before the exports start, so gc condemns and
	// deletes it while the exports that opened before deduplicate against
	// it (and those that open after must store it again).
	shared := make([]byte, size)
	fillRand(rng, shared)
	forgotten := make([]byte, 16<<20)
	fillRand(rng, forgotten)
	if _, err := mover.Export(ctx, &memSource{b: shared}, r0, mover.ExportOptions{Volume: "shared"}); err != nil {
		t.Fatal(err)
	}
	gone, err := mover.Export(ctx, &memSource{b: forgotten}, r0, mover.ExportOptions{Volume: "forgotten"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r0.DeleteSnapshot(ctx, gone.Snapshot.ID); err != nil {
		t.Fatal(err)
	}
	vols := make([][]byte, 4)
	for i := range vols {
		vols[i] = bytes.Clone(shared)
		copy(vols[i][32<<20:], forgotten[:8<<20])
		for range 4 { // 4 MiB of new data per volume, at different places
			off := rng.Int64N(size - 1<<20)
			fillRand(rng, vols[i][off:off+1<<20])
		}
	}

	var wg sync.WaitGroup
	done := make(chan struct{})
	gcErr := make(chan error, 1)
	gcRuns, deleted := 0, 0
	go func() {
		defer close(gcErr)
		for {
			r := openRepo(t, dir)
			res, err := r.GC(ctx, repo.GCOptions{Grace: grace})
			if err != nil {
				gcErr <- err
				return
			}
			gcRuns++
			deleted += res.Deleted
			select {
			case <-done:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	results := make([]*mover.ExportResult, len(vols))
	errs := make([]error, len(vols))
	for i := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Stagger the starts across gc runs.
			time.Sleep(time.Duration(i) * 300 * time.Millisecond)
			r := openRepo(t, dir)
			results[i], errs[i] = mover.Export(ctx, &memSource{b: vols[i]}, r, mover.ExportOptions{Volume: "vol" + string(rune('0'+i))})
		}()
	}
	wg.Wait()
	// Let gc run past twice the grace period: packs younger than it are
	// kept whole, and condemned packs are deleted a grace period later.
	time.Sleep(2*grace + time.Second)
	close(done)
	if err := <-gcErr; err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("export %d: %v", i, err)
		}
		t.Logf("vol%d: new %d stored %d", i, results[i].NewBytes, results[i].StoredBytes)
		// New: 4 MiB, the forgotten 8 MiB if the pack was condemned when
		// the export opened, and the chunks around them.
		if results[i].StoredBytes > size/2 {
			t.Errorf("vol%d stored %d bytes of a 64 MiB volume that shares 52 MiB with a live snapshot", i, results[i].StoredBytes)
		}
	}
	r := openRepo(t, dir)
	res, err := r.GC(ctx, repo.GCOptions{Grace: grace})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d gc runs beside the exports; last: %+v", gcRuns, res)
	if deleted == 0 && res.Deleted == 0 {
		t.Error("no gc run deleted anything: the test did not exercise deletion")
	}
	chk, err := openRepo(t, dir).Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !chk.OK() {
		t.Fatalf("check after concurrent exports and gc: %v", chk.Errors())
	}
	for i, res := range results {
		out := filepath.Join(t.TempDir(), "out.img")
		importPath(t, r, res.Snapshot, out, mover.ImportOptions{})
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, vols[i]) {
			t.Fatalf("vol%d does not import byte-identically", i)
		}
	}
}
