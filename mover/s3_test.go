package mover_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blockmover/blockmover/bench"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	"github.com/blockmover/blockmover/repo/repotest"
)

func TestMain(m *testing.M) {
	s3test.SetTestEnv()
	os.Exit(m.Run())
}

// s3Backend opens a fresh bucket on a real S3 server (versitygw on
// loopback), wrapped as the CLI wraps it: a connection limit and retries.
func s3Backend(t testing.TB, srv *s3test.Server, wrap func(backend.Backend) backend.Backend) backend.Backend {
	t.Helper()
	return repotest.S3(t, srv, repotest.S3Options{Wrap: wrap})
}

func initRepo(t testing.TB, be backend.Backend, packSize int) *repo.Repository {
	t.Helper()
	return repotest.Init(t, be, repo.InitOptions{PackSize: packSize})
}

// TestS3RoundTripLoopDevices: the core round trip with an S3 repository —
// a loop device exported, imported onto another one full of old data,
// byte-identical.
func TestS3RoundTripLoopDevices(t *testing.T) {
	const size = 512 << 20
	srv := s3test.Start(t, false)
	r := initRepo(t, s3Backend(t, srv, nil), 4<<20)
	src := loopDevice(t, size)
	fillVolume(t, src, bench.Spec{Size: size, Seed: 2, Zero: 0.3, File: 0.3, Duplicate: 0.2, RegionSize: 16 << 20})
	dst := loopDevice(t, size)
	fillRandom(t, dst, size, 3)
	res := exportPath(t, r, src, "s3-vol", mover.ExportOptions{Uploads: 4})
	t.Logf("export to S3: %d bytes stored in %v", res.StoredBytes, res.Duration)
	ires := importPath(t, r, res.Snapshot, dst, mover.ImportOptions{Downloads: 8})
	t.Logf("import from S3: %d bytes fetched in %v", ires.FetchedBytes, ires.Duration)
	if hashFile(t, src, size) != hashFile(t, dst, size) {
		t.Fatal("device imported from S3 differs from the source")
	}
}

// TestS3Faults: an export through a backend that fails 10% of calls
// (transient errors, replies lost after the object landed, stalls) still
// completes with a correct snapshot; one whose faults become permanent
// fails cleanly and leaves a repository that check passes.
func TestS3Faults(t *testing.T) {
	ctx := context.Background()
	const size = 96 << 20
	srv := s3test.Start(t, false)
	img := make([]byte, size)
	fillRand(newRand(31), img[:size*3/4])

	var faulty *backend.Faulty
	be := s3Backend(t, srv, func(b backend.Backend) backend.Backend {
		faulty = backend.NewFaulty(b, backend.FaultOptions{Seed: 7, ErrorRate: 0.1, AfterPutErrorRate: 0.05,
			GetBodyErrorRate: 0.05, StallRate: 0.1, MaxStall: 50 * time.Millisecond})
		return faulty
	})
	r := initRepo(t, be, 1<<20) // many packs: many calls to fail
	res, err := mover.Export(ctx, &memSource{b: img}, r, mover.ExportOptions{Volume: "faulty", Uploads: 4})
	if err != nil {
		t.Fatalf("export under a 10%% fault rate: %v", err)
	}
	if faulty.Faults(backend.OpPut) == 0 {
		t.Fatal("no faults were injected into the export's puts")
	}
	r2, err := repo.Open(ctx, be, testPassword, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	chk, err := r2.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || !chk.OK() {
		t.Fatalf("check after a faulty export: %v %v", err, chk.Errors())
	}
	got := &memTarget{b: make([]byte, size)}
	if _, err := mover.Import(ctx, r2, res.Snapshot, got, mover.ImportOptions{}); err != nil {
		t.Fatalf("import under faults: %v", err)
	}
	if string(got.b) != string(img) {
		t.Fatal("snapshot exported under faults does not import byte-identically")
	}
	for _, op := range []backend.Op{backend.OpPut, backend.OpGet, backend.OpStat, backend.OpList} {
		t.Logf("faults injected into %s: %d of %d calls", op, faulty.Faults(op), faulty.Calls(op))
	}
	if faulty.Faults(backend.OpGet) == 0 {
		t.Fatal("no faults were injected into the gets of check and import")
	}

	// Permanent faults: the backend refuses every put after the 5th.
	clean := s3Backend(t, srv, nil)
	r3 := initRepo(t, clean, 1<<20)
	broken := backend.NewRetry(backend.NewFaulty(clean, backend.FaultOptions{FailAfterPuts: 5}), backend.RetryOptions{InitialDelay: time.Millisecond})
	rb, err := repo.Open(ctx, broken, testPassword, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	_, err = mover.Export(ctx, &memSource{b: img}, rb, mover.ExportOptions{Volume: "broken"})
	if !errors.Is(err, backend.ErrPermanent) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("export with permanent faults: want one line wrapping ErrPermanent, got %q", err)
	}
	t.Logf("permanent faults: %v", err)
	chk, err = r3.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || !chk.OK() {
		t.Fatalf("check after a failed export: %v %v", err, chk.Errors())
	}
	if chk.Snapshots != 0 {
		t.Fatalf("a failed export left %d snapshots", chk.Snapshots)
	}
	if len(chk.Problems) == 0 {
		t.Fatal("check after a failed export: no warning about the packs it left")
	}
	for _, p := range chk.Problems {
		if !strings.Contains(p.Err, "not in any index") {
			t.Errorf("check after a failed export: unexpected %+v", p)
		}
	}
}
