package csi

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	moverOnce sync.Once
	moverBin  string
	moverErr  error
)

// buildMover builds cmd/mover once per test binary, for the host.
func buildMover(t *testing.T) string {
	t.Helper()
	moverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "blockmover-bin-")
		if err != nil {
			moverErr = err
			return
		}
		moverBin = filepath.Join(dir, "mover")
		out, err := exec.Command("go", "build", "-o", moverBin, "../cmd/mover").CombinedOutput()
		if err != nil {
			moverErr = errors.New(string(out))
		}
	})
	if moverErr != nil {
		t.Fatalf("building mover: %v", moverErr)
	}
	return moverBin
}

// TestIncrementalExport: an export that keeps its VolumeSnapshot, then an
// incremental one whose Job's init container (mover k8s changes, as the
// Job's ServiceAccount) gets the changed blocks between the two CSI
// snapshots from the real csi-snapshot-metadata sidecar (TLS, TokenReview
// and SubjectAccessReview against the API server) and the test driver's
// GetMetadataDelta; the mover reads only the change and where the hole
// around it ends, and the snapshot imports byte-identical into a new PVC.
func TestIncrementalExport(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	e.realRepo(nil)
	data := e.sourceVolume() // random, then 8 MiB of zeros
	args := ExportArgs{Namespace: e.ns, PVC: "data", Operation: "base", Job: e.jobOptions(), Timing: fastTiming(),
		Volume: "data", KeepSnapshot: true}
	base, err := e.orch.Export(e.ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	// 64 KiB written into the zeros.
	change := pattern(5, 64<<10)
	const at = 12 << 20
	copy(data[at:], change)
	e.fill("data", at, change)

	args.Operation, args.KeepSnapshot = "incr", false
	args.Base, args.ChangedBlocks = base.Snapshot, &ChangedBlocks{BaseSnapshotHandle: base.SnapshotHandle}
	res, err := e.orch.Export(e.ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("incremental export: read %d bytes, reused %d, new %d", res.ReadBytes, res.ReusedBytes, res.NewBytes)
	// The 64 KiB changed, and one read (128 KiB) where the hole around it
	// ends (mover.TestIncrementalSkipsKnownZeros).
	if res.Parent != base.Snapshot || res.ReusedBytes == 0 || res.ReadBytes < 64<<10 || res.ReadBytes > 64<<10+128<<10 {
		t.Errorf("incremental export read %d of %d bytes, reused %d, parent %s; want 64 KiB to 192 KiB read, parent %s",
			res.ReadBytes, volSize, res.ReusedBytes, res.Parent, base.Snapshot)
	}
	var initName string
	for _, j := range e.seen.createdJobs() {
		if j.Name == ObjectName("incr") {
			for _, c := range j.Spec.Template.Spec.InitContainers {
				initName += c.Name + " " + strings.Join(c.Args, " ")
			}
		}
	}
	if !strings.Contains(initName, "k8s changes") {
		t.Errorf("the incremental Job's init containers: %q, want mover k8s changes", initName)
	}

	imp, err := e.orch.Import(e.ctx, ImportArgs{Namespace: e.ns, PVC: "restored", Operation: "incr-back", Snapshot: res.Snapshot,
		Size: res.Size, StorageClass: testStorageClass, Job: e.jobOptions(), Timing: fastTiming()})
	if err != nil {
		t.Fatal(err)
	}
	if imp.Size != volSize || imp.Snapshot != res.Snapshot {
		t.Errorf("import result %s", imp.Raw)
	}
	if got, err := os.ReadFile(e.volumeFile("restored")); err != nil || !bytes.Equal(got[:volSize], data) {
		t.Fatalf("the volume restored from the incremental export differs (%v)", err)
	}
	// The kept base snapshot goes with its operation's cleanup.
	if err := e.orch.Cleanup(e.ctx, e.ns, "base"); err != nil {
		t.Fatal(err)
	}
	e.settles(0, 2, 0)
}
