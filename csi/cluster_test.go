package csi

// The harness of the tests against a real cluster
// (internal/testcluster, Options.Kubelet): etcd, kube-apiserver,
// kube-controller-manager (Job controller, PV binder, garbage collector,
// ...), kube-scheduler, snapshot-controller, the test CSI driver with
// csi-provisioner, csi-snapshotter and csi-snapshot-metadata, and a real
// kubelet with containerd that runs the mover image built from this tree.
// One cluster per test binary (started by the first test that needs it,
// stopped by TestMain, which fails the run if anything is left behind), a
// namespace per test (tests that only use their namespace run in
// parallel, after the ones that set faults of the shared test driver or
// kill the control plane, which run alone), the RBAC of deploy/rbac.yaml, and, for the tests
// that run the mover, an S3 repository (versitygw on the host's loopback,
// reached by the pods through a proxy at the pod network's gateway).
// Nothing here plays a controller.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockmover/blockmover/csi/internal/testcluster"
	"github.com/blockmover/blockmover/csi/internal/testdriver"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

var (
	clusterOnce sync.Once
	cluster     *testcluster.Cluster
	clusterErr  error
	clusterDir  string
)

func TestMain(m *testing.M) {
	s3test.SetTestEnv()
	code := m.Run()
	if cluster != nil {
		cluster.Stop()
		if err := cluster.Leftovers(); err != nil {
			fmt.Fprintf(os.Stderr, "the test cluster left something behind: %v\n", err)
			code = 1
		}
	}
	if clusterDir != "" {
		os.RemoveAll(clusterDir)
	}
	if moverBin != "" {
		os.RemoveAll(filepath.Dir(moverBin))
	}
	os.Exit(code)
}

const (
	testDriver = testdriver.DefaultName
	// testStorageClass binds at once (the source volumes of the tests);
	// testcluster.DefaultClasses' "blockmover" waits for the first consumer.
	testStorageClass = "fast"
	testSnapClass    = "blockmover"
	orchestratorSA   = "blockmover"
	moverSA          = "blockmover-mover"
	// moverImage is cmd/mover of this tree, imported into the node.
	moverImage = "blockmover.test/mover:csi"
)

// testCluster starts the cluster on first use: with the node, so root
// only. Without the binaries the test fails (skips only with
// BLOCKMOVER_SKIP_K8S=1, or when make cluster-tools has not run).
func testCluster(t *testing.T) *testcluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a cluster with a kubelet")
	}
	if os.Geteuid() != 0 {
		t.Skip("the kubelet, containerd and the test CSI driver need root")
	}
	clusterOnce.Do(func() {
		// Starting the cluster and building the mover's image take a
		// minute on a warm build cache; the bound is for a cold one on
		// a busy machine (`make test` compiles the image's parts first).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if clusterDir, clusterErr = os.MkdirTemp("", "blockmover-k8s-"); clusterErr != nil {
			return
		}
		if cluster, clusterErr = testcluster.StartWith(ctx, clusterDir, testcluster.Options{Kubelet: true}); clusterErr != nil {
			return
		}
		if clusterErr = cluster.DefaultClasses(ctx, testSnapClass); clusterErr != nil {
			return
		}
		imm := storagev1.VolumeBindingImmediate
		admin, err := NewClients(cluster.Config)
		if err != nil {
			clusterErr = err
			return
		}
		if _, clusterErr = admin.Kube.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
			ObjectMeta: metav1.ObjectMeta{Name: testStorageClass}, Provisioner: testDriver, VolumeBindingMode: &imm,
		}, metav1.CreateOptions{}); clusterErr != nil {
			return
		}
		clusterErr = cluster.LoadMoverImage(ctx, moverImage)
	})
	if clusterErr != nil {
		if errors.Is(clusterErr, testcluster.ErrNoClusterTools) ||
			errors.Is(clusterErr, testcluster.ErrNoBinaries) && os.Getenv(testcluster.SkipEnv) == "1" {
			t.Skipf("%v", clusterErr)
		}
		t.Fatalf("test cluster: %v", clusterErr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs:\n%s", cluster.Logs())
		}
	})
	return cluster
}

// env is one test's namespace and clients.
type env struct {
	t     *testing.T
	ctx   context.Context
	ns    string
	admin *Clients
	// orch acts as the orchestrator ServiceAccount with deploy/rbac.yaml.
	orch    *Clients
	orchCfg *rest.Config
	// seen records every Job and pod created in the namespace.
	seen *recorder
	// The S3 repository of realRepo.
	s3      *s3test.Server
	repoURL string
}

var nsCounter struct {
	sync.Mutex
	n int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := testCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	admin, err := NewClients(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	nsCounter.Lock()
	nsCounter.n++
	ns := fmt.Sprintf("bm%d-%s", nsCounter.n, strings.ToLower(strings.ReplaceAll(t.Name(), "_", "-")))
	nsCounter.Unlock()
	ns = strings.ReplaceAll(ns, "/", "-")
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
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster log lines naming %s:\n%s", ns, c.LogLines(ns, 200))
		}
	})
	e.seen = e.record()
	e.applyManifest("../deploy/rbac.yaml")
	// The ServiceAccount controller makes "default"; the Job controller's
	// pods need it.
	e.waitFor("ServiceAccount default", func() bool {
		_, err := admin.Kube.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	})
	e.orchCfg = e.saConfig(orchestratorSA)
	if e.orch, err = NewClients(e.orchCfg); err != nil {
		t.Fatal(err)
	}
	return e
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

// realRepo starts an S3 server with a bucket, initialises a repository in
// it and creates the Secret "repo" the mover pods read it with (they reach
// the server at the pod network's gateway). gate, when not nil, can make
// S3 unreachable for the pods, or hold their requests.
func (e *env) realRepo(gate *s3Gate) {
	t := e.t
	t.Helper()
	e.s3 = s3test.Start(t, false)
	bucket := e.s3.NewBucket(t, false)
	e.repoURL = "s3://" + bucket + "/repo"
	podS3 := e.proxyToPods(strings.TrimPrefix(e.s3.Endpoint, "http://"), gate)
	e.hostMover("init")
	secret := map[string]string{SecretKeyPassword: "pod-secret", SecretKeyRepository: e.repoURL, "AWS_ENDPOINT_URL": "http://" + podS3}
	for k, v := range s3test.Env() {
		if k != "AWS_CONFIG_FILE" && k != "AWS_SHARED_CREDENTIALS_FILE" {
			secret[k] = v
		}
	}
	if _, err := e.admin.Kube.CoreV1().Secrets(e.ns).Create(e.ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "repo"}, StringData: secret}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// s3Gate stands between the pods and S3: while refuse holds, every new
// connection is closed at once (the mover's requests fail and are
// retried); while hold holds, new connections wait, unanswered, and go
// through once it is released.
type s3Gate struct{ refuse, hold atomic.Bool }

// proxyToPods serves target (an address on the host's loopback) to the
// pods at the pod network's gateway, through gate when not nil; it returns
// the address the pods use.
func (e *env) proxyToPods(target string, gate *s3Gate) string {
	l, err := cluster.ListenPods(0)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			if gate != nil && gate.refuse.Load() {
				in.Close()
				continue
			}
			go func() {
				defer in.Close()
				for gate != nil && gate.hold.Load() {
					time.Sleep(20 * time.Millisecond)
				}
				out, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer out.Close()
				go func() {
					io.Copy(out, in)
					out.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(in, out)
			}()
		}
	}()
	return l.Addr().String()
}

// hostMover runs the mover on the host against the test's repository and
// returns its standard output.
func (e *env) hostMover(args ...string) []byte {
	t := e.t
	t.Helper()
	args = append(args, "-r", e.repoURL, "--s3-endpoint", e.s3.Endpoint, "--s3-path-style", "-q")
	cmd := exec.CommandContext(e.ctx, buildMover(t), args...)
	cmd.Env = append(os.Environ(), "MOVER_PASSWORD=pod-secret")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mover %v: %v: %s", args, err, stderr.String())
	}
	return out
}

// snapshotBytes imports a repository snapshot on the host and returns its
// bytes.
func (e *env) snapshotBytes(id string) []byte {
	e.t.Helper()
	f := filepath.Join(e.t.TempDir(), "snapshot.img")
	e.hostMover("import", "--snapshot", id, "--target", f)
	b, err := os.ReadFile(f)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// boundPVC creates a PVC of the Immediate class and waits until the real
// csi-provisioner and PV controller have bound it.
func (e *env) boundPVC(name string, size string, mode corev1.PersistentVolumeMode) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	q := resource.MustParse(size)
	sc := testStorageClass
	pvc, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Create(e.ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &sc, VolumeMode: &mode,
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

// volumeFile is the test driver's backing file of a bound PVC's volume.
func (e *env) volumeFile(name string) string {
	e.t.Helper()
	pvc, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	pv, err := e.admin.Kube.CoreV1().PersistentVolumes().Get(e.ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return filepath.Join(cluster.DriverStateDir(), "volumes", pv.Spec.CSI.VolumeHandle+".img")
}

// fill writes data at off into a bound Block PVC's volume, through the
// driver's backing file while no pod uses it (testcluster's TestKubelet
// shows pods writing onto the device; here the bytes are what matters).
func (e *env) fill(pvc string, off int64, data []byte) {
	e.t.Helper()
	writeAt(e.t, e.volumeFile(pvc), off, data)
}

// pattern returns n bytes of a seeded xorshift stream.
func pattern(seed uint32, n int) []byte {
	b := make([]byte, n)
	x := seed*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
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

// jobOptions are the test's JobOptions: the mover image of this tree, the
// Secret of realRepo, path-style S3.
func (e *env) jobOptions() JobOptions {
	return JobOptions{Image: moverImage, ImagePullPolicy: corev1.PullNever, Secret: "repo", ServiceAccount: moverSA,
		Args:      []string{"--s3-path-style"},
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}}
}

func fastTiming() Timing {
	return Timing{Snapshot: time.Minute, Job: 2 * time.Minute, Bind: time.Minute, Poll: 200 * time.Millisecond}
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

// settles waits until the namespace holds exactly vs VolumeSnapshots, pvcs
// PVCs and jobs Jobs (deletions take their time through the finalizers of
// the real controllers), and checks that the VolumeSnapshotContents and
// PersistentVolumes of the namespace match: a deleted snapshot's content
// and a deleted claim's volume are gone too.
func (e *env) settles(vs, pvcs, jobs int) {
	e.t.Helper()
	var state string
	deadline := time.Now().Add(time.Minute)
	for {
		v, p, j, _ := e.count()
		vscs, pvs := 0, 0
		if l, err := e.admin.Snapshot.SnapshotV1().VolumeSnapshotContents().List(e.ctx, metav1.ListOptions{}); err == nil {
			for _, c := range l.Items {
				if c.Spec.VolumeSnapshotRef.Namespace == e.ns {
					vscs++
				}
			}
		}
		if l, err := e.admin.Kube.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{}); err == nil {
			for _, pv := range l.Items {
				if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == e.ns {
					pvs++
				}
			}
		}
		if v == vs && p == pvcs && j == jobs && vscs == vs && pvs == pvcs {
			return
		}
		state = fmt.Sprintf("%d VolumeSnapshots (%d contents), %d PVCs (%d PVs), %d Jobs", v, vscs, p, pvs, j)
		if time.Now().After(deadline) {
			e.t.Fatalf("want %d VolumeSnapshots, %d PVCs, %d Jobs; have %s", vs, pvcs, jobs, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitFor polls cond until it holds.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func jobCond(job *batchv1.Job, t batchv1.JobConditionType) bool { return jobCondition(job, t) != nil }

// recorder keeps every Job and pod of a namespace as first seen, through a
// watch that resumes after the API server went away (a list, then a watch
// again).
type recorder struct {
	mu   sync.Mutex
	jobs map[types.UID]*batchv1.Job
	pods map[types.UID]*corev1.Pod
	// jobOrder is the UIDs of jobs in the order seen.
	jobOrder []types.UID
}

func (e *env) record() *recorder {
	r := &recorder{jobs: map[types.UID]*batchv1.Job{}, pods: map[types.UID]*corev1.Pod{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.t.Cleanup(func() { cancel(); <-done })
	jobs, pods := e.admin.Kube.BatchV1().Jobs(e.ns), e.admin.Kube.CoreV1().Pods(e.ns)
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			r.follow(ctx, func(ctx context.Context) (watch.Interface, error) {
				l, err := jobs.List(ctx, metav1.ListOptions{})
				if err != nil {
					return nil, err
				}
				for i := range l.Items {
					r.add(&l.Items[i])
				}
				return jobs.Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
			}, func(ctx context.Context) (watch.Interface, error) {
				l, err := pods.List(ctx, metav1.ListOptions{})
				if err != nil {
					return nil, err
				}
				for i := range l.Items {
					r.add(&l.Items[i])
				}
				return pods.Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
			})
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return r
}

// follow runs both watches until either ends.
func (r *recorder) follow(ctx context.Context, starts ...func(context.Context) (watch.Interface, error)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ws []watch.Interface
	for _, start := range starts {
		w, err := start(ctx)
		if err != nil {
			return
		}
		defer w.Stop()
		ws = append(ws, w)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ws[0].ResultChan():
			if !ok {
				return
			}
			r.add(ev.Object)
		case ev, ok := <-ws[1].ResultChan():
			if !ok {
				return
			}
			r.add(ev.Object)
		}
	}
}

func (r *recorder) add(obj any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch o := obj.(type) {
	case *batchv1.Job:
		if _, ok := r.jobs[o.UID]; !ok {
			r.jobs[o.UID] = o.DeepCopy()
			r.jobOrder = append(r.jobOrder, o.UID)
		}
	case *corev1.Pod:
		if _, ok := r.pods[o.UID]; !ok {
			r.pods[o.UID] = o.DeepCopy()
		}
	}
}

// createdJobs returns the Jobs seen, in order.
func (r *recorder) createdJobs() []*batchv1.Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*batchv1.Job
	for _, uid := range r.jobOrder {
		out = append(out, r.jobs[uid])
	}
	return out
}

// podsOf returns how many pods of the Job named name were seen.
func (r *recorder) podsOf(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.pods {
		if p.Labels["job-name"] == name || p.Labels[batchv1.JobNameLabel] == name {
			n++
		}
	}
	return n
}

// jobsNamed returns how many Jobs named name were seen.
func (r *recorder) jobsNamed(name string) int {
	n := 0
	for _, j := range r.createdJobs() {
		if j.Name == name {
			n++
		}
	}
	return n
}
