package csi

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/csi/internal/testcluster"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestCLIK8s: `mover k8s export` and `mover k8s import` against the real
// cluster, as the orchestrator ServiceAccount through a kubeconfig: the
// snapshot holds the volume's bytes, the import's PVC the snapshot's.
func TestCLIK8s(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	bin := buildMover(t)
	e.realRepo(nil)
	data := e.sourceVolume()
	kc := writeKubeconfig(t, e.orchCfg.Host, e.orchCfg.BearerToken, e.ns)
	mover := func(args ...string) (int, string, string) {
		cmd := exec.CommandContext(e.ctx, bin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "KUBECONFIG=" + kc, "HOME=" + t.TempDir()}
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errb.String()
	}

	// The Job's pod may only run on a node labelled zone=a: the node.
	patch := []byte(`{"metadata":{"labels":{"zone":"a"}}}`)
	if _, err := e.admin.Kube.CoreV1().Nodes().Patch(e.ctx, testcluster.NodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	image := []string{"--image", moverImage, "--image-pull-policy", "Never", "--job-arg=--s3-path-style"}
	code, out, errs := mover(append([]string{"k8s", "export", "--pvc", "data", "--secret", "repo", "--repo", e.repoURL,
		"--memory", "512Mi", "--node-selector", "zone=a", "--keep-snapshot", "--json", "-q"}, image...)...)
	if code != 0 {
		t.Fatalf("k8s export: exit %d: %s", code, errs)
	}
	var res struct {
		Snapshot string `json:"snapshot"`
		Size     int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Snapshot == "" || res.Size != volSize {
		t.Fatalf("k8s export --json: %q (%v)", out, err)
	}
	if got := e.snapshotBytes(res.Snapshot); !bytes.Equal(got, data) {
		t.Error("the snapshot of mover k8s export differs from the volume")
	}
	job := e.seen.createdJobs()[0]
	if job.Name != "mover-export-data" || job.Spec.Template.Spec.NodeSelector["zone"] != "a" {
		t.Errorf("Job %s, node selector %v", job.Name, job.Spec.Template.Spec.NodeSelector)
	}
	for _, v := range job.Spec.Template.Spec.Containers[0].Env {
		if v.Name == "MOVER_REPOSITORY" && v.Value != e.repoURL {
			t.Errorf("MOVER_REPOSITORY %+v", v)
		}
	}
	// --keep-snapshot: the VolumeSnapshot stays for the next delta;
	// cleanup removes it.
	e.settles(1, 1, 0)
	if code, _, errs := mover("k8s", "cleanup", "--operation", "export-data"); code != 0 {
		t.Fatalf("k8s cleanup: %s", errs)
	}
	e.settles(0, 1, 0)

	code, out, errs = mover(append([]string{"k8s", "import", "--pvc", "back", "--snapshot", res.Snapshot, "--size", "16MiB",
		"--storage-class", testStorageClass, "--secret", "repo"}, image...)...)
	if code != 0 || !strings.Contains(out, "onto PVC "+e.ns+"/back") {
		t.Fatalf("k8s import: exit %d: %s %s", code, out, errs)
	}
	if got, err := os.ReadFile(e.volumeFile("back")); err != nil || !bytes.Equal(got[:volSize], data) {
		t.Errorf("the PVC of mover k8s import differs from the snapshot (%v)", err)
	}

	// A wrong command line: exit 2 and one line.
	code, _, errs = mover("k8s", "export", "--pvc", "data", "--image", "x")
	if code != 2 || !strings.Contains(errs, "secret") || strings.Count(errs, "\n") != 1 {
		t.Errorf("missing --secret: exit %d, %q", code, errs)
	}
	// A denial is one clear line too.
	code, _, errs = mover("k8s", "export", "-n", "kube-system", "--pvc", "data", "--secret", "repo", "-q")
	if code != 1 || !strings.Contains(errs, "forbidden") || strings.Count(errs, "\n") != 1 {
		t.Errorf("other namespace: exit %d, %q", code, errs)
	}
}
