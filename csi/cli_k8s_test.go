package csi

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCLIK8s: `mover k8s export` and `mover k8s import` against the real
// API server, as the orchestrator ServiceAccount through a kubeconfig.
func TestCLIK8s(t *testing.T) {
	e := newEnv(t)
	bin := buildMover(t)
	e.boundPVC("data", "1Gi", corev1.PersistentVolumeBlock)
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

	code, out, errs := mover("k8s", "export", "--pvc", "data", "--secret", "repo", "--repo", "s3://b/p", "--image", "mover:test",
		"--memory", "512Mi", "--node-selector", "zone=a", "--keep-snapshot", "--json", "-q")
	if code != 0 {
		t.Fatalf("k8s export: exit %d: %s", code, errs)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["snapshot"] != "0123abcd" {
		t.Fatalf("k8s export --json: %q (%v)", out, err)
	}
	job := e.fake.createdJobs()[0]
	if job.Name != "mover-export-data" || job.Spec.Template.Spec.NodeSelector["zone"] != "a" {
		t.Errorf("Job %s, node selector %v", job.Name, job.Spec.Template.Spec.NodeSelector)
	}
	for _, v := range job.Spec.Template.Spec.Containers[0].Env {
		if v.Name == "MOVER_REPOSITORY" && v.Value != "s3://b/p" {
			t.Errorf("MOVER_REPOSITORY %+v", v)
		}
	}
	// --keep-snapshot: the VolumeSnapshot stays for the next delta;
	// cleanup removes it.
	if vs, _, jobs, _ := e.count(); vs != 1 || jobs != 0 {
		t.Errorf("after export --keep-snapshot: %d VolumeSnapshots, %d Jobs", vs, jobs)
	}
	if code, _, errs := mover("k8s", "cleanup", "--operation", "export-data"); code != 0 {
		t.Fatalf("k8s cleanup: %s", errs)
	}
	if vs, _, _, _ := e.count(); vs != 0 {
		t.Errorf("after cleanup: %d VolumeSnapshots", vs)
	}

	code, out, errs = mover("k8s", "import", "--pvc", "back", "--snapshot", "0123abcd", "--size", "1GiB", "--storage-class", testStorageClass,
		"--secret", "repo", "--image", "mover:test")
	if code != 0 || !strings.Contains(out, "onto PVC "+e.ns+"/back") {
		t.Fatalf("k8s import: exit %d: %s %s", code, out, errs)
	}
	if _, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, "back", metav1.GetOptions{}); err != nil {
		t.Error(err)
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
