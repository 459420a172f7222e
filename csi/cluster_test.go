package csi

// The harness of the tests against a real kube-apiserver and etcd
// (internal/testcluster): one cluster per test binary, a namespace per
// test, the RBAC of deploy/rbac.yaml, and fake controllers that stand in
// for the ones a real cluster runs (each says which).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockmover/blockmover/csi/internal/testcluster"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
)

var (
	clusterOnce sync.Once
	cluster     *testcluster.Cluster
	clusterErr  error
	clusterDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster != nil {
		cluster.Stop()
	}
	if clusterDir != "" {
		os.RemoveAll(clusterDir)
	}
	os.Exit(code)
}

// testCluster starts the cluster on first use. Without the binaries the
// test fails (skips only with BLOCKMOVER_SKIP_K8S=1).
func testCluster(t *testing.T) *testcluster.Cluster {
	t.Helper()
	clusterOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if clusterDir, clusterErr = os.MkdirTemp("", "blockmover-k8s-"); clusterErr != nil {
			return
		}
		if cluster, clusterErr = testcluster.Start(ctx, clusterDir); clusterErr != nil {
			return
		}
		crds, err := testcluster.SnapshotCRDs()
		if err != nil {
			clusterErr = err
			return
		}
		crds = append(crds, filepath.Join("testdata", "crd", "cbt.storage.k8s.io_snapshotmetadataservices.yaml"))
		clusterErr = cluster.InstallCRDs(ctx, crds...)
	})
	if clusterErr != nil {
		if errors.Is(clusterErr, testcluster.ErrNoBinaries) && os.Getenv(testcluster.SkipEnv) == "1" {
			t.Skipf("%v", clusterErr)
		}
		t.Fatalf("test cluster: %v", clusterErr)
	}
	return cluster
}

const (
	testDriver       = "block.csi.test"
	testStorageClass = "fast"
	testSnapClass    = "snaps"
	orchestratorSA   = "blockmover"
	moverSA          = "blockmover-mover"
)

// env is one test's namespace and clients.
type env struct {
	t     *testing.T
	ctx   context.Context
	ns    string
	admin *Clients
	// orch acts as the orchestrator ServiceAccount with deploy/rbac.yaml.
	orch    *Clients
	orchCfg *rest.Config
	fake    *fakeControllers
}

var nsCounter struct {
	sync.Mutex
	n int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := testCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	admin, err := NewClients(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	nsCounter.Lock()
	nsCounter.n++
	ns := fmt.Sprintf("bm%d-%s", nsCounter.n, strings.ToLower(strings.ReplaceAll(t.Name(), "_", "-")))
	nsCounter.Unlock()
	if len(ns) > 50 {
		ns = ns[:50]
	}
	ns = strings.TrimRight(ns, "-")
	// Pods must meet the baseline Pod Security Standard, as in most
	// clusters; the PodSecurity admission plugin enforces it.
	_, err = admin.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, ns: ns, admin: admin}
	e.applyManifest("../deploy/rbac.yaml")
	// The ServiceAccount controller creates "default" in a real cluster.
	e.createSA("default")
	e.orchCfg = e.saConfig(orchestratorSA)
	if e.orch, err = NewClients(e.orchCfg); err != nil {
		t.Fatal(err)
	}
	e.storageFixtures()
	e.fake = newFakeControllers(e)
	return e
}

func (e *env) createSA(name string) {
	_, err := e.admin.Kube.CoreV1().ServiceAccounts(e.ns).Create(e.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatal(err)
	}
}

// saConfig authenticates as the ServiceAccount with a real token from the
// TokenRequest API.
func (e *env) saConfig(sa string) *rest.Config {
	tok, _, err := e.admin.RequestToken(e.ctx, e.ns, sa, "https://kubernetes.default.svc.cluster.local", time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := rest.CopyConfig(cluster.Config)
	cfg.BearerToken = tok
	return cfg
}

var kindGVR = map[string]schema.GroupVersionResource{
	"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
	"Secret":             {Version: "v1", Resource: "secrets"},
	"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"Role":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	"RoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	"Job":                {Group: "batch", Version: "v1", Resource: "jobs"},
}

// readManifest decodes the YAML documents of a file in deploy/, moved from
// the namespace "blockmover" to the test's (cluster-scoped bindings get the
// namespace as a suffix, so tests do not share them).
func (e *env) readManifest(path string) []*unstructured.Unstructured {
	b, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err == io.EOF {
			break
		} else if err != nil {
			e.t.Fatalf("%s: %v", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetNamespace() != "" {
			u.SetNamespace(e.ns)
		}
		if u.GetKind() == "ClusterRoleBinding" {
			u.SetName(u.GetName() + "-" + e.ns)
		}
		if subs, ok, _ := unstructured.NestedSlice(u.Object, "subjects"); ok {
			for _, s := range subs {
				s.(map[string]any)["namespace"] = e.ns
			}
			unstructured.SetNestedSlice(u.Object, subs, "subjects")
		}
		objs = append(objs, u)
	}
	return objs
}

func (e *env) applyManifest(path string) {
	e.t.Helper()
	for _, u := range e.readManifest(path) {
		gvr, ok := kindGVR[u.GetKind()]
		if !ok {
			e.t.Fatalf("%s: unexpected kind %s", path, u.GetKind())
		}
		var ri interface {
			Create(context.Context, *unstructured.Unstructured, metav1.CreateOptions, ...string) (*unstructured.Unstructured, error)
			Update(context.Context, *unstructured.Unstructured, metav1.UpdateOptions, ...string) (*unstructured.Unstructured, error)
			Get(context.Context, string, metav1.GetOptions, ...string) (*unstructured.Unstructured, error)
		}
		if u.GetNamespace() != "" {
			ri = e.admin.Dynamic.Resource(gvr).Namespace(u.GetNamespace())
		} else {
			ri = e.admin.Dynamic.Resource(gvr)
		}
		_, err := ri.Create(e.ctx, u, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			old, gerr := ri.Get(e.ctx, u.GetName(), metav1.GetOptions{})
			if gerr != nil {
				e.t.Fatal(gerr)
			}
			u.SetResourceVersion(old.GetResourceVersion())
			_, err = ri.Update(e.ctx, u, metav1.UpdateOptions{})
		}
		if err != nil {
			e.t.Fatalf("%s: %s %s: %v", path, u.GetKind(), u.GetName(), err)
		}
	}
}

// storageFixtures: a StorageClass and a VolumeSnapshotClass of the test
// driver, shared by all tests (cluster-scoped), and the Secret.
func (e *env) storageFixtures() {
	imm := storagev1.VolumeBindingImmediate
	_, err := e.admin.Kube.StorageV1().StorageClasses().Create(e.ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: testStorageClass}, Provisioner: testDriver, VolumeBindingMode: &imm,
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatal(err)
	}
	_, err = e.admin.Snapshot.SnapshotV1().VolumeSnapshotClasses().Create(e.ctx, &snapv1.VolumeSnapshotClass{
		ObjectMeta: metav1.ObjectMeta{Name: testSnapClass, Annotations: map[string]string{AnnotationDefaultSnapshotClass: "true"}},
		Driver:     testDriver, DeletionPolicy: snapv1.VolumeSnapshotContentDelete,
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatal(err)
	}
	_, err = e.admin.Kube.CoreV1().Secrets(e.ns).Create(e.ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "repo"},
		StringData: map[string]string{"MOVER_PASSWORD": "secret-pw", "MOVER_REPOSITORY": "s3://bucket/prefix", "AWS_REGION": "eu-west-1"},
	}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
}

// boundPVC creates a PVC and waits until the fake provisioner has bound it
// to a CSI PersistentVolume of the test driver.
func (e *env) boundPVC(name string, size string, mode corev1.PersistentVolumeMode) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	q := resource.MustParse(size)
	sc := testStorageClass
	pvc, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Create(e.ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeMode: &mode, StorageClassName: &sc,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: q}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.waitFor("PVC "+name+" bound", func() bool {
		pvc, err = e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, name, metav1.GetOptions{})
		return err == nil && pvc.Status.Phase == corev1.ClaimBound
	})
	return pvc
}

// writeKubeconfig writes a kubeconfig that reaches the test API server
// with token, namespace ns by default, and returns its path.
func writeKubeconfig(t *testing.T, host, token, ns string) string {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	err := os.WriteFile(kc, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: %q}}]
current-context: c
`, host, token, ns)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

func (e *env) secretValue(name, key string) (string, bool) {
	s, err := e.admin.Kube.CoreV1().Secrets(e.ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	v, ok := s.Data[key]
	return string(v), ok
}

// jobOptions are the test's JobOptions.
func (e *env) jobOptions() JobOptions {
	return JobOptions{Image: "registry.example/blockmover/mover:test", Secret: "repo", ServiceAccount: moverSA,
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}}
}

func fastTiming() Timing {
	return Timing{Snapshot: 20 * time.Second, Job: time.Minute, Bind: 20 * time.Second, Poll: 50 * time.Millisecond}
}

// count returns how many objects of each kind the namespace holds.
func (e *env) count() (vs, pvc, jobs, pods int) {
	e.t.Helper()
	v, err := e.admin.Snapshot.SnapshotV1().VolumeSnapshots(e.ns).List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	p, _ := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).List(e.ctx, metav1.ListOptions{})
	j, _ := e.admin.Kube.BatchV1().Jobs(e.ns).List(e.ctx, metav1.ListOptions{})
	po, _ := e.admin.Kube.CoreV1().Pods(e.ns).List(e.ctx, metav1.ListOptions{})
	return len(v.Items), len(p.Items), len(j.Items), len(po.Items)
}

// waitFor polls cond until it holds.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func jobCond(job *batchv1.Job, t batchv1.JobConditionType) bool { return jobCondition(job, t) != nil }
