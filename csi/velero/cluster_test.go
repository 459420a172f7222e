package velero

// Tests against a real cluster (csi/internal/testcluster): etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler,
// snapshot-controller and csi-snapshotter with the test CSI driver, and
// Velero's own CRDs from the module at v1.18.3. Nothing here plays a
// controller: the objects are created as Velero creates them, and every
// other change is made by the real components or by the controller under
// test. Without a kubelet no mover pod runs, so these tests follow a
// DataUpload as far as its Job; e2e_test.go goes further once the cluster
// has one.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockmover/blockmover/csi"
	"github.com/blockmover/blockmover/csi/internal/testcluster"
	"github.com/blockmover/blockmover/csi/internal/testdriver"
	"github.com/blockmover/blockmover/deploy"
	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// testCA stands for the PEM CA bundle of a location's caCert.
const testCA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

const (
	veleroNS   = "velero"
	snapClass  = "test-snapshots"
	blockClass = "csi-block"
)

// veleroCRDs are Velero's CRD files from the module (pinned in go.mod).
func veleroCRDs(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/vmware-tanzu/velero").Output()
	if err != nil {
		t.Fatalf("finding the velero module: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	var files []string
	for _, f := range []string{"v2alpha1/bases/velero.io_datauploads.yaml", "v2alpha1/bases/velero.io_datadownloads.yaml",
		"v1/bases/velero.io_backupstoragelocations.yaml", "v1/bases/velero.io_backups.yaml"} {
		files = append(files, filepath.Join(dir, "config", "crd", f))
	}
	return files
}

// world is one test's cluster, with the test driver, a bound Block PVC
// and Velero's namespace.
type world struct {
	t       *testing.T
	ctx     context.Context
	cluster *testcluster.Cluster
	admin   *csi.Clients
	driver  csispec.ControllerClient
	state   string // the test driver's state directory (volumes/ID.img)
	sock    string // the test driver's socket
	ns      string // the application's namespace
}

// startWorld starts the cluster (options given by opt), the test driver
// with the real csi-snapshotter, and installs Velero's CRDs, skipping the
// test when the cluster's binaries are missing.
func startWorld(t *testing.T, opt func(*testcluster.Options)) *world {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	o := testcluster.Options{Controllers: true}
	if opt != nil {
		opt(&o)
	}
	c, err := testcluster.StartWith(ctx, t.TempDir(), o)
	switch {
	case errors.Is(err, testcluster.ErrNoClusterTools):
		t.Skipf("%v", err)
	case errors.Is(err, testcluster.ErrNoBinaries) && os.Getenv(testcluster.SkipEnv) == "1":
		t.Skipf("%v", err)
	case err != nil:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs:\n%s", c.Logs())
		}
		pids := c.PIDs()
		c.Stop()
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process %d still there after Stop", pid)
			}
		}
	})
	if err := c.InstallCRDs(ctx, veleroCRDs(t)...); err != nil {
		t.Fatal(err)
	}
	admin, err := csi.NewClients(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, ctx: ctx, cluster: c, admin: admin, ns: "shop"}
	if o.Kubelet {
		w.useNodeDriver()
	} else {
		w.startDriver()
	}
	for _, ns := range []string{veleroNS, w.ns} {
		if _, err := admin.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	w.applyRBAC()
	if _, err := admin.Snapshot.SnapshotV1().VolumeSnapshotClasses().Create(ctx, &snapv1.VolumeSnapshotClass{
		ObjectMeta: metav1.ObjectMeta{Name: snapClass}, Driver: testdriver.DefaultName, DeletionPolicy: snapv1.VolumeSnapshotContentDelete,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return w
}

// startDriver serves the test driver on a unix socket and starts the real
// csi-snapshotter against it.
func (w *world) startDriver() {
	t := w.t
	dir := t.TempDir()
	w.state = filepath.Join(dir, "state")
	d, err := testdriver.New(testdriver.Config{StateDir: w.state, NodeID: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
	w.sock = sock
	l, err := testdriver.Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(sctx, l) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("driver: %v", err)
		}
	})
	if err := w.cluster.StartCSISnapshotter(w.ctx, sock); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	w.driver = csispec.NewControllerClient(conn)
}

// useNodeDriver uses the node's CSI driver (Options.Kubelet), which the
// cluster serves with the real csi-provisioner and csi-snapshotter, and
// makes the StorageClass of the clones and restores.
func (w *world) useNodeDriver() {
	t := w.t
	w.sock, w.state = w.cluster.DriverSocket(), w.cluster.DriverStateDir()
	conn, err := grpc.NewClient("unix://"+w.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	w.driver = csispec.NewControllerClient(conn)
	if _, err := w.admin.Kube.StorageV1().StorageClasses().Create(w.ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: blockClass}, Provisioner: testdriver.DefaultName,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// boundPVC makes a Block volume through the driver (as the provisioner
// would), its PV, and a PVC the real PV binder binds to it.
func (w *world) boundPVC(name string) *corev1.PersistentVolumeClaim {
	t, ctx := w.t, w.ctx
	vol, err := w.driver.CreateVolume(ctx, newCreateVolume("pvc-"+name))
	if err != nil {
		t.Fatal(err)
	}
	block := corev1.PersistentVolumeBlock
	class := blockClass
	if _, err := w.admin.Kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-" + name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(vol.Volume.CapacityBytes, resource.BinarySI)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			VolumeMode:                    &block,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: testdriver.DefaultName, VolumeHandle: vol.Volume.VolumeId}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pvc, err := w.admin.Kube.CoreV1().PersistentVolumeClaims(w.ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: &class,
			VolumeMode: &block, VolumeName: "pv-" + name,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.waitFor(time.Minute, "PVC "+name+" bound", func() (bool, string) {
		p, err := w.admin.Kube.CoreV1().PersistentVolumeClaims(w.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pvc = p
		return p.Status.Phase == corev1.ClaimBound, string(p.Status.Phase)
	})
	return pvc
}

// snapshot takes a VolumeSnapshot of pvc as Velero's CSI PVC action does
// (the class given) and waits until the real controllers made it ready.
func (w *world) snapshot(pvc, name string) *snapv1.VolumeSnapshot {
	t, ctx := w.t, w.ctx
	class := snapClass
	vss := w.admin.Snapshot.SnapshotV1().VolumeSnapshots(w.ns)
	if _, err := vss.Create(ctx, &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"velero.io/backup-name": "b1"}},
		Spec:       snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvc}, VolumeSnapshotClassName: &class},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var vs *snapv1.VolumeSnapshot
	w.waitFor(2*time.Minute, "VolumeSnapshot "+name+" ready", func() (bool, string) {
		got, err := vss.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		vs = got
		if got.Status == nil {
			return false, "no status"
		}
		return got.Status.ReadyToUse != nil && *got.Status.ReadyToUse, fmt.Sprintf("ready %v error %v", got.Status.ReadyToUse, got.Status.Error)
	})
	return vs
}

// veleroSetup writes what `velero install` and the user write: the
// BackupStorageLocation, the cloud-credentials Secret (AWS INI) and the
// controller's password Secret.
func (w *world) veleroSetup() {
	t, ctx := w.t, w.ctx
	secrets := w.admin.Kube.CoreV1().Secrets(veleroNS)
	for name, data := range map[string]map[string][]byte{
		"cloud-credentials":   {"cloud": []byte("[default]\naws_access_key_id = minio\naws_secret_access_key = minio123\n")},
		"blockmover-password": {csi.SecretKeyPassword: []byte("correct horse")},
	} {
		if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	loc := &velerov1.BackupStorageLocation{
		TypeMeta:   metav1.TypeMeta{APIVersion: "velero.io/v1", Kind: "BackupStorageLocation"},
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: veleroNS},
		Spec: velerov1.BackupStorageLocationSpec{Provider: "aws", Default: true,
			Config: map[string]string{"region": "minio", "s3Url": "http://127.0.0.1:9000", "s3ForcePathStyle": "true"},
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: "velero", Prefix: "cluster",
				CACert: []byte(testCA)}}},
	}
	u, err := toUnstructured(loc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.Dynamic.Resource(bslGVR()).Namespace(veleroNS).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// dataUpload creates a DataUpload exactly as Velero 1.18's CSI PVC action
// does (pkg/backup/actions/csi/pvc_action.go: createDataUpload), for
// pvc's VolumeSnapshot vs, served by mover.
func (w *world) dataUpload(name string, pvc *corev1.PersistentVolumeClaim, vs, mover, bsl string, edit ...func(*velerov2.DataUpload)) *velerov2.DataUpload {
	du := &velerov2.DataUpload{
		TypeMeta: metav1.TypeMeta{APIVersion: "velero.io/v2alpha1", Kind: "DataUpload"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: veleroNS, Labels: map[string]string{
			velerov1.BackupNameLabel: "b1", velerov1.BackupUIDLabel: "0d4f0a1e-0000-4000-8000-000000000001",
			velerov1.PVCUIDLabel: string(pvc.UID), velerov1.AsyncOperationIDLabel: "du-" + string(pvc.UID) + "." + "0d4f0a1e",
		}},
		Spec: velerov2.DataUploadSpec{
			SnapshotType: velerov2.SnapshotTypeCSI,
			CSISnapshot: &velerov2.CSISnapshotSpec{VolumeSnapshot: vs, StorageClass: blockClass, SnapshotClass: snapClass,
				Driver: testdriver.DefaultName},
			SourcePVC: pvc.Name, SourceNamespace: pvc.Namespace, DataMover: mover, BackupStorageLocation: bsl,
			OperationTimeout: metav1.Duration{Duration: 10 * time.Minute},
		},
	}
	for _, e := range edit {
		e(du)
	}
	u, err := toUnstructured(du)
	if err != nil {
		w.t.Fatal(err)
	}
	got, err := w.admin.Dynamic.Resource(uploadsGVR()).Namespace(veleroNS).Create(w.ctx, u, metav1.CreateOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	out, err := fromUnstructured[velerov2.DataUpload](got)
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

func (w *world) getUpload(name string) *velerov2.DataUpload {
	du, err := getObject[velerov2.DataUpload](w.ctx, w.admin.Dynamic, uploadsGVR(), veleroNS, name)
	if err != nil {
		w.t.Fatal(err)
	}
	return du
}

// waitUpload waits until the DataUpload name is in phase.
func (w *world) waitUpload(name string, phase velerov2.DataUploadPhase, timeout time.Duration) *velerov2.DataUpload {
	var du *velerov2.DataUpload
	w.waitFor(timeout, "DataUpload "+name+" "+string(phase), func() (bool, string) {
		du = w.getUpload(name)
		return du.Status.Phase == phase, fmt.Sprintf("phase %q message %q", du.Status.Phase, du.Status.Message)
	})
	return du
}

// applyRBAC creates the ServiceAccounts and RBAC of deploy/controller.yaml
// (not its Deployment: the tests run the controller in the test process).
func (w *world) applyRBAC() {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(deploy.Controller()), 4096)
	gvrs := map[string]schema.GroupVersionResource{
		"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
		"Role":               rbacv1.SchemeGroupVersion.WithResource("roles"),
		"RoleBinding":        rbacv1.SchemeGroupVersion.WithResource("rolebindings"),
		"ClusterRole":        rbacv1.SchemeGroupVersion.WithResource("clusterroles"),
		"ClusterRoleBinding": rbacv1.SchemeGroupVersion.WithResource("clusterrolebindings"),
	}
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err == io.EOF {
			break
		} else if err != nil {
			w.t.Fatal(err)
		}
		gvr, ok := gvrs[u.GetKind()]
		if !ok {
			continue
		}
		var ri dynamic.ResourceInterface = w.admin.Dynamic.Resource(gvr)
		if u.GetNamespace() != "" {
			ri = w.admin.Dynamic.Resource(gvr).Namespace(u.GetNamespace())
		}
		if _, err := ri.Create(w.ctx, &u, metav1.CreateOptions{}); err != nil {
			w.t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// controllerClients act as the controller's ServiceAccount, with a real
// token, so that every test proves deploy/controller.yaml's RBAC enough.
func (w *world) controllerClients() *csi.Clients {
	tok, _, err := w.admin.RequestToken(w.ctx, veleroNS, "blockmover-controller", "https://kubernetes.default.svc.cluster.local", time.Hour)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg := rest.CopyConfig(w.cluster.Config)
	cfg.BearerToken = tok
	cfg.CertData, cfg.KeyData, cfg.CertFile, cfg.KeyFile = nil, nil, "", ""
	c, err := csi.NewClients(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// controller runs a controller (with leader election) until the returned
// stop is called.
func (w *world) controller(identity string, edit ...func(*Config)) (stop func()) {
	cfg := Config{Namespace: veleroNS, PasswordSecret: "blockmover-password", Image: "blockmover/mover:test",
		Identity: identity, Concurrency: 2, Resync: time.Second,
		Timing: csi.Timing{Poll: 200 * time.Millisecond}, Log: testLogger(w.t)}
	for _, e := range edit {
		e(&cfg)
	}
	c, err := New(w.controllerClients(), cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(w.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once bool
	stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			w.t.Errorf("controller %s: %v", identity, err)
		}
	}
	w.t.Cleanup(stop)
	return stop
}

func (w *world) waitFor(timeout time.Duration, what string, cond func() (bool, string)) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: not after %v (last: %s)", what, timeout, seen)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// jobsOf lists the Jobs of a DataUpload's operation.
func (w *world) jobsOf(uid types.UID) []string {
	jobs, err := w.admin.Kube.BatchV1().Jobs(veleroNS).List(w.ctx, metav1.ListOptions{LabelSelector: csi.LabelOperation + "=" + OperationID("du", string(uid))})
	if err != nil {
		w.t.Fatal(err)
	}
	var names []string
	for _, j := range jobs.Items {
		names = append(names, j.Name+"/"+string(j.UID))
	}
	return names
}

// TestDataUploadNoPod follows DataUploads through the controller on a
// cluster without a kubelet: acceptance by datamover, the phases up to
// the mover Job, ownership of the VolumeSnapshot, the Job Secret derived
// from the BackupStorageLocation, adoption after a restart (one Job),
// cancel, and a missing BackupStorageLocation.
func TestDataUploadNoPod(t *testing.T) {
	w := startWorld(t, nil)
	ctx := w.ctx
	w.veleroSetup()
	pvc := w.boundPVC("db")
	vs := w.snapshot("db", "velero-db-abcde")
	vsc := *vs.Status.BoundVolumeSnapshotContentName

	stop := w.controller("replica-1")
	other := w.dataUpload("b1-other", pvc, "not-ours", "velero", "default")
	du := w.dataUpload("b1-db", pvc, vs.Name, DefaultName, "default")
	op := OperationID("du", string(du.UID))

	// Accepted, then Prepared once the snapshot is taken over.
	got := w.waitUpload(du.Name, velerov2.DataUploadPhasePrepared, 2*time.Minute)
	if got.Status.AcceptedByNode != "replica-1" || got.Status.AcceptedTimestamp == nil {
		t.Errorf("accepted by %q at %v", got.Status.AcceptedByNode, got.Status.AcceptedTimestamp)
	}
	w.checkTakenOver(vs.Name, vsc, op)
	jobs := w.checkJob(du, pvc, op)

	// A second replica waits for the Lease; when the first stops, it
	// leads and adopts the operation and its Job.
	stop2 := w.controller("replica-2")
	defer stop2()
	time.Sleep(3 * time.Second)
	if again := w.jobsOf(du.UID); len(again) != 1 || again[0] != jobs[0] {
		t.Errorf("with two replicas, Jobs %v, want only %v", again, jobs)
	}
	stop()
	w.waitFor(time.Minute, "replica-2 holds the Lease", func() (bool, string) {
		l, err := w.admin.Kube.CoordinationV1().Leases(veleroNS).Get(ctx, "blockmover-controller", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return false, fmt.Sprint(err)
		}
		return *l.Spec.HolderIdentity == "replica-2", *l.Spec.HolderIdentity
	})
	time.Sleep(3 * time.Second) // several reconcile passes of the new leader
	if again := w.jobsOf(du.UID); len(again) != 1 || again[0] != jobs[0] {
		t.Errorf("after a restart, Jobs %v, want only %v", again, jobs)
	}
	if p := w.getUpload(du.Name).Status.Phase; p != velerov2.DataUploadPhasePrepared {
		t.Errorf("phase after restart %s", p)
	}
	// Another mover's DataUpload was never touched.
	if o := w.getUpload(other.Name); o.Status.Phase != "" || o.ResourceVersion != other.ResourceVersion {
		t.Errorf("DataUpload of the velero mover: phase %q, resourceVersion %s → %s", o.Status.Phase, other.ResourceVersion, o.ResourceVersion)
	}

	// Cancel: the Job, the clone and the snapshot go, the phase is Canceled.
	if _, err := updateObject[velerov2.DataUpload](ctx, w.admin.Dynamic, uploadsGVR(), veleroNS, du.Name, func(d *velerov2.DataUpload) bool {
		d.Spec.Cancel = true
		return true
	}); err != nil {
		t.Fatal(err)
	}
	got = w.waitUpload(du.Name, velerov2.DataUploadPhaseCanceled, time.Minute)
	snaps := w.admin.Snapshot.SnapshotV1()
	if got.Status.CompletionTimestamp == nil {
		t.Errorf("canceled without a completion time")
	}
	w.waitFor(time.Minute, "the operation's objects gone", func() (bool, string) {
		_, err1 := w.admin.Kube.BatchV1().Jobs(veleroNS).Get(ctx, csi.ObjectName(op), metav1.GetOptions{})
		_, err2 := w.admin.Kube.CoreV1().PersistentVolumeClaims(veleroNS).Get(ctx, csi.ObjectName(op), metav1.GetOptions{})
		_, err3 := snaps.VolumeSnapshots(veleroNS).Get(ctx, csi.ObjectName(op), metav1.GetOptions{})
		return apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2) && apierrors.IsNotFound(err3), fmt.Sprintf("%v; %v; %v", err1, err2, err3)
	})

	t.Run("base", func(t *testing.T) {
		// Earlier backups of the PVC, as they end: the newest Completed
		// one of this mover is the base of the next.
		done := func(mover string, phase velerov2.DataUploadPhase, snap string, age time.Duration) func(*velerov2.DataUpload) {
			return func(d *velerov2.DataUpload) {
				d.Spec.DataMover, d.Status.Phase, d.Status.SnapshotID = mover, phase, snap
				d.Status.CompletionTimestamp = &metav1.Time{Time: time.Now().Add(-age).Truncate(time.Second)}
			}
		}
		w.dataUpload("old-1", pvc, "x", DefaultName, "default", done(DefaultName, velerov2.DataUploadPhaseCompleted, "aaaa", 3*time.Hour))
		w.dataUpload("old-2", pvc, "x", DefaultName, "default", done(DefaultName, velerov2.DataUploadPhaseCompleted, "bbbb", 2*time.Hour))
		w.dataUpload("old-3", pvc, "x", "velero", "default", done("velero", velerov2.DataUploadPhaseCompleted, "cccc", time.Hour))
		w.dataUpload("old-4", pvc, "x", DefaultName, "default", done(DefaultName, velerov2.DataUploadPhaseFailed, "", time.Minute))
		c, err := New(w.controllerClients(), Config{Namespace: veleroNS, PasswordSecret: "p", Image: "i"})
		if err != nil {
			t.Fatal(err)
		}
		if base, err := c.baseUpload(ctx, du); err != nil || base == nil || base.Status.SnapshotID != "bbbb" {
			t.Errorf("base %+v, %v; want old-2's, snapshot bbbb", base, err)
		}
	})

	t.Run("cancel-before-start", func(t *testing.T) {
		pvc := w.boundPVC("cache")
		vs := w.snapshot("cache", "velero-cache-fghij")
		// Created with spec.cancel set: the cancel of a backup that
		// Velero deleted before the controller saw its DataUpload.
		du := w.dataUpload("b1-cache", pvc, vs.Name, DefaultName, "default", func(d *velerov2.DataUpload) { d.Spec.Cancel = true })
		got := w.waitUpload(du.Name, velerov2.DataUploadPhaseCanceled, time.Minute)
		if len(w.jobsOf(du.UID)) != 0 || got.Status.AcceptedByNode != "" {
			t.Errorf("a DataUpload canceled before it started got Jobs %v, accepted by %q", w.jobsOf(du.UID), got.Status.AcceptedByNode)
		}
	})

	t.Run("missing-bsl", func(t *testing.T) {
		pvc := w.boundPVC("logs")
		vs := w.snapshot("logs", "velero-logs-klmno")
		du := w.dataUpload("b1-logs", pvc, vs.Name, DefaultName, "offsite")
		got := w.waitUpload(du.Name, velerov2.DataUploadPhaseFailed, time.Minute)
		want := "BackupStorageLocation offsite not found in namespace velero"
		if !strings.Contains(got.Status.Message, want) || strings.Contains(got.Status.Message, "\n") || got.Status.CompletionTimestamp == nil {
			t.Errorf("message %q, want one line with %q", got.Status.Message, want)
		}
		// The snapshot was not taken over: Velero still owns it.
		if _, err := snaps.VolumeSnapshots(w.ns).Get(ctx, vs.Name, metav1.GetOptions{}); err != nil {
			t.Errorf("the VolumeSnapshot of a failed DataUpload: %v", err)
		}
	})
}

// checkTakenOver checks that the VolumeSnapshot vs (content vsc) of the
// application's namespace was taken over by operation op.
func (w *world) checkTakenOver(vs, vsc, op string) {
	t, ctx := w.t, w.ctx
	snaps := w.admin.Snapshot.SnapshotV1()
	w.waitFor(time.Minute, "the original VolumeSnapshot and content gone", func() (bool, string) {
		_, err1 := snaps.VolumeSnapshots(w.ns).Get(ctx, vs, metav1.GetOptions{})
		_, err2 := snaps.VolumeSnapshotContents().Get(ctx, vsc, metav1.GetOptions{})
		return apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2), fmt.Sprintf("%v; %v", err1, err2)
	})
	ours, err := snaps.VolumeSnapshots(veleroNS).Get(ctx, csi.ObjectName(op), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the taken-over VolumeSnapshot: %v", err)
	}
	content, err := snaps.VolumeSnapshotContents().Get(ctx, csi.ObjectName(op), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if content.Spec.DeletionPolicy != snapv1.VolumeSnapshotContentDelete || content.Spec.Source.SnapshotHandle == nil {
		t.Errorf("taken-over content: policy %s source %+v", content.Spec.DeletionPolicy, content.Spec.Source)
	}
	w.waitFor(time.Minute, "the taken-over VolumeSnapshot ready", func() (bool, string) {
		ours, err = snaps.VolumeSnapshots(veleroNS).Get(ctx, csi.ObjectName(op), metav1.GetOptions{})
		if err != nil || ours.Status == nil {
			return false, fmt.Sprint(err)
		}
		return ours.Status.ReadyToUse != nil && *ours.Status.ReadyToUse, fmt.Sprint(ours.Status.Error)
	})

}

// checkJob checks the export Job of du and the Secret it reads, and
// returns the Jobs of du's operation (one).
func (w *world) checkJob(du *velerov2.DataUpload, pvc *corev1.PersistentVolumeClaim, op string) []string {
	t, ctx := w.t, w.ctx
	// The export's Job, in Velero's namespace, reading the BSL's repository.
	w.waitFor(time.Minute, "the mover Job", func() (bool, string) {
		jobs := w.jobsOf(du.UID)
		return len(jobs) == 1, fmt.Sprint(jobs)
	})
	jobs := w.jobsOf(du.UID)
	job, err := w.admin.Kube.BatchV1().Jobs(veleroNS).Get(ctx, csi.ObjectName(op), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(job.Spec.Template.Spec.Containers[0].Args, " ")
	for _, want := range []string{"export", "--name=shop-db", "--tag=velero.io/backup-name=b1", "--tag=velero.io/pvc-uid=" + string(pvc.UID),
		"--s3-path-style", "--s3-ca-bundle=" + csi.CABundlePath} {
		if !strings.Contains(args, want) {
			t.Errorf("Job args %q lack %q", args, want)
		}
	}
	sec, err := w.admin.Kube.CoreV1().Secrets(veleroNS).Get(ctx, RepositorySecretName("default"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{csi.SecretKeyRepository: "s3://velero/cluster/plugins/blockmover", csi.SecretKeyPassword: "correct horse",
		"AWS_ACCESS_KEY_ID": "minio", "AWS_SECRET_ACCESS_KEY": "minio123", "AWS_REGION": "minio", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
		caBundleKey: testCA} {
		if string(sec.Data[k]) != v {
			t.Errorf("Job Secret %s = %q, want %q", k, sec.Data[k], v)
		}
	}

	return jobs
}

// newCreateVolume asks the driver for a 16 MiB block volume.
func newCreateVolume(name string) *csispec.CreateVolumeRequest {
	return &csispec.CreateVolumeRequest{
		Name:          name,
		CapacityRange: &csispec.CapacityRange{RequiredBytes: 16 << 20},
		VolumeCapabilities: []*csispec.VolumeCapability{{AccessType: &csispec.VolumeCapability_Block{Block: &csispec.VolumeCapability_BlockVolume{}},
			AccessMode: &csispec.VolumeCapability_AccessMode{Mode: csispec.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}},
	}
}

// TestConcurrencyBound: with one slot, a second DataUpload waits in New
// (its snapshot untouched) while the first is in progress, and starts
// when the first ends (here: canceled).
func TestConcurrencyBound(t *testing.T) {
	w := startWorld(t, nil)
	w.veleroSetup()
	w.controller("replica-1", func(c *Config) { c.Concurrency = 1 })
	a, b := w.boundPVC("a"), w.boundPVC("b")
	w.snapshot("a", "velero-a")
	w.snapshot("b", "velero-b")
	first := w.dataUpload("b1-a", a, "velero-a", DefaultName, "default")
	w.waitUpload(first.Name, velerov2.DataUploadPhasePrepared, time.Minute)
	second := w.dataUpload("b1-b", b, "velero-b", DefaultName, "default")
	time.Sleep(3 * time.Second) // several passes
	if got := w.getUpload(second.Name); got.Status.Phase != "" && got.Status.Phase != velerov2.DataUploadPhaseNew {
		t.Fatalf("second DataUpload %s while the only slot is taken", got.Status.Phase)
	}
	if _, err := w.admin.Snapshot.SnapshotV1().VolumeSnapshots(w.ns).Get(w.ctx, "velero-b", metav1.GetOptions{}); err != nil {
		t.Errorf("the waiting DataUpload's snapshot: %v", err)
	}
	if _, err := updateObject[velerov2.DataUpload](w.ctx, w.admin.Dynamic, uploadsGVR(), veleroNS, first.Name, func(d *velerov2.DataUpload) bool {
		d.Spec.Cancel = true
		return true
	}); err != nil {
		t.Fatal(err)
	}
	w.waitUpload(first.Name, velerov2.DataUploadPhaseCanceled, time.Minute)
	w.waitUpload(second.Name, velerov2.DataUploadPhasePrepared, time.Minute)
}

// TestDataUploadDeleted: a DataUpload deleted while its Job runs (as
// Velero deletes those of a deleted backup) has its Job, clone and
// snapshot deleted.
func TestDataUploadDeleted(t *testing.T) {
	w := startWorld(t, nil)
	w.veleroSetup()
	w.controller("replica-1")
	pvc := w.boundPVC("db")
	w.snapshot("db", "velero-db")
	du := w.dataUpload("b1-db", pvc, "velero-db", DefaultName, "default")
	op := OperationID("du", string(du.UID))
	w.waitFor(time.Minute, "the mover Job", func() (bool, string) {
		jobs := w.jobsOf(du.UID)
		return len(jobs) == 1, fmt.Sprint(jobs)
	})
	if err := w.admin.Dynamic.Resource(uploadsGVR()).Namespace(veleroNS).Delete(w.ctx, du.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w.waitFor(time.Minute, "the operation's objects gone", func() (bool, string) {
		_, err1 := w.admin.Kube.BatchV1().Jobs(veleroNS).Get(w.ctx, csi.ObjectName(op), metav1.GetOptions{})
		_, err2 := w.admin.Kube.CoreV1().PersistentVolumeClaims(veleroNS).Get(w.ctx, csi.ObjectName(op), metav1.GetOptions{})
		_, err3 := w.admin.Snapshot.SnapshotV1().VolumeSnapshots(veleroNS).Get(w.ctx, csi.ObjectName(op), metav1.GetOptions{})
		return apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2) && apierrors.IsNotFound(err3), fmt.Sprintf("%v; %v; %v", err1, err2, err3)
	})
}
