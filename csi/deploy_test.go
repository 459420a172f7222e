package csi

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/csi/internal/testcluster"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// TestPinnedVersions: the versions the test helper looks for are the ones
// hack/install-k8s-test-tools.sh and hack/install-cluster-tools.sh build.
func TestPinnedVersions(t *testing.T) {
	for file, want := range map[string]string{
		"../hack/tools/go.mod":                   `k8s\.io/kubernetes ` + regexp.QuoteMeta(testcluster.KubernetesVersion) + `\b`,
		"../hack/tools/etcd/go.mod":              `go\.etcd\.io/etcd/server/v3 ` + regexp.QuoteMeta(testcluster.EtcdVersion) + `\b`,
		"../hack/tools/snapshotter/go.mod":       `github\.com/kubernetes-csi/external-snapshotter/v8 ` + regexp.QuoteMeta(testcluster.SnapshotterVersion) + `\b`,
		"../hack/tools/provisioner/go.mod":       `github\.com/kubernetes-csi/external-provisioner/v6 ` + regexp.QuoteMeta(testcluster.ProvisionerVersion) + `\b`,
		"../hack/tools/snapshot-metadata/go.mod": `github\.com/kubernetes-csi/external-snapshot-metadata ` + regexp.QuoteMeta(testcluster.SnapshotMetadataVersion) + `\b`,
		"../hack/tools/containerd/go.mod":        `github\.com/containerd/containerd/v2 ` + regexp.QuoteMeta(testcluster.ContainerdVersion) + `\b`,
		"../hack/tools/runc/go.mod":              `github\.com/opencontainers/runc ` + regexp.QuoteMeta(testcluster.RuncVersion) + `\b`,
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(want).Match(b) {
			t.Errorf("%s does not pin %s", file, want)
		}
	}
}

// TestDeployExamples: the example manifests in deploy/ are accepted by the
// API server (server-side dry run, as the orchestrator), and the example
// Jobs' containers are what package csi generates.
func TestDeployExamples(t *testing.T) {
	e := newEnv(t)
	dyn, err := dynamic.NewForConfig(e.orchCfg)
	if err != nil {
		t.Fatal(err)
	}
	gvrs := map[string]schema.GroupVersionResource{
		"VolumeSnapshot":        {Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshots"},
		"PersistentVolumeClaim": {Version: "v1", Resource: "persistentvolumeclaims"},
		"Job":                   {Group: "batch", Version: "v1", Resource: "jobs"},
	}
	jobs := map[string]*batchv1.Job{}
	for _, f := range []string{"../deploy/export-job.yaml", "../deploy/import-job.yaml"} {
		for _, u := range e.readManifest(f) {
			_, err := dyn.Resource(gvrs[u.GetKind()]).Namespace(e.ns).Create(e.ctx, u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				t.Errorf("%s: %s %s: %v", f, u.GetKind(), u.GetName(), err)
			}
			if u.GetKind() == "Job" {
				var j batchv1.Job
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &j); err != nil {
					t.Fatal(err)
				}
				jobs[f] = &j
			}
		}
	}
	o := JobOptions{Image: "blockmover/mover:dev", Secret: "blockmover-repo", ServiceAccount: moverSA}
	o.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")}}
	gen := buildJob(jobSpec{ns: e.ns, op: "example-export", pvc: "mover-example-export", readOnly: true,
		args: []string{"export", "--source=" + DevicePath, "--name=blockmover-data", "--tag=namespace=blockmover"}}, &o)
	compareJobs(t, "export", jobs["../deploy/export-job.yaml"], gen)
	o.Resources = corev1.ResourceRequirements{}
	gen = buildJob(jobSpec{ns: e.ns, op: "example-import", pvc: "restored",
		args: []string{"import", "--snapshot=latest:blockmover-data", "--target=" + DevicePath}}, &o)
	compareJobs(t, "import", jobs["../deploy/import-job.yaml"], gen)
}

func compareJobs(t *testing.T, what string, example, gen *batchv1.Job) {
	t.Helper()
	if example == nil {
		t.Fatalf("no %s example Job", what)
	}
	ec, gc := example.Spec.Template.Spec.Containers[0], gen.Spec.Template.Spec.Containers[0]
	for _, c := range []struct {
		name   string
		ex, ge any
	}{
		{"command", ec.Command, gc.Command}, {"args", ec.Args, gc.Args}, {"env", ec.Env, gc.Env},
		{"volumeDevices", ec.VolumeDevices, gc.VolumeDevices}, {"securityContext", ec.SecurityContext, gc.SecurityContext},
		{"terminationMessagePolicy", ec.TerminationMessagePolicy, gc.TerminationMessagePolicy},
		{"podFailurePolicy", example.Spec.PodFailurePolicy, gen.Spec.PodFailurePolicy},
		{"volumes", example.Spec.Template.Spec.Volumes, gen.Spec.Template.Spec.Volumes},
		{"automount", example.Spec.Template.Spec.AutomountServiceAccountToken, gen.Spec.Template.Spec.AutomountServiceAccountToken},
		{"labels", example.Spec.Template.Labels, gen.Spec.Template.Labels},
	} {
		if !reflect.DeepEqual(c.ex, c.ge) {
			t.Errorf("%s example Job %s differs from package csi's:\n example %+v\n csi     %+v", what, c.name, c.ex, c.ge)
		}
	}
}

// TestJobPodSecurity: the mover pod passes the baseline Pod Security
// Standard as root without capabilities; with RunAsUser it passes
// restricted, and as root restricted rejects it (expected).
func TestJobPodSecurity(t *testing.T) {
	e := newEnv(t)
	restricted := e.ns + "-r"
	_, err := e.admin.Kube.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: restricted,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := func(ns string, o JobOptions) error {
		job := buildJob(jobSpec{ns: ns, op: "psa", pvc: "x", args: []string{"export"}}, &o)
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "psa-" + strings.ToLower(rand8()), Namespace: ns}, Spec: job.Spec.Template.Spec}
		_, err := e.admin.Kube.CoreV1().Pods(ns).Create(e.ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	o := e.jobOptions()
	o.ServiceAccount = ""
	if err := pod(e.ns, o); err != nil {
		t.Errorf("baseline namespace rejects the default mover pod: %v", err)
	}
	if err := pod(restricted, o); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "runAsNonRoot") {
		t.Errorf("restricted namespace, root mover: want a denial about runAsNonRoot, got %v", err)
	}
	o.RunAsUser = ptr(int64(65532))
	if err := pod(restricted, o); err != nil {
		t.Errorf("restricted namespace rejects the non-root mover pod: %v", err)
	}
}

func rand8() string { return strings.ReplaceAll(metav1.Now().Format("150405.000000"), ".", "") }
