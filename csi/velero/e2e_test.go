package velero

// The end-to-end test: a mover pod really runs, on the test cluster's node
// (testcluster Options.Kubelet: a real kubelet with containerd, the test
// driver as its CSI plugin with csi-provisioner and csi-snapshotter), with
// the mover image built from this tree. The mover pods reach the test S3
// server on the host through testcluster's proxy at the pod network's
// gateway (ProxyToPods); the test reads the repository directly.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/csi/internal/testcluster"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend/location"
	"github.com/blockmover/blockmover/repo/backend/s3"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	moverImageEnv      = "BLOCKMOVER_E2E_IMAGE"
	defaultE2EImage    = "blockmover/mover:dev" // hack/build-image.sh's tag
	e2eVolumeSizeBytes = 16 << 20
)

// e2eCluster is the option that starts the cluster with its node: a real
// kubelet, containerd, the test driver as its CSI plugin, csi-provisioner
// (issue 13).
func e2eCluster(t *testing.T) func(*testcluster.Options) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the node needs root (namespaces, loop devices)")
	}
	return func(o *testcluster.Options) { o.Kubelet = true }
}

// TestVeleroEndToEnd: a DataUpload created as Velero creates it reaches
// Completed, and its snapshot imports byte-identical to the volume; a
// second backup after some blocks changed is incremental (its parent is
// the first, it stores only the change); a DataDownload restores it into a
// PVC as Velero's restore leaves it, whose volume holds the same bytes.
// (The bytes are compared in the driver's backing files; reading them
// back through a pod needs an image with a reader, which `make image` does
// not build.)
func TestVeleroEndToEnd(t *testing.T) {
	w := startWorld(t, e2eCluster(t))
	s3test.SetTestEnv()
	srv := s3test.Start(t, false)
	bucket := srv.NewBucket(t, false)
	// The pods reach the host's S3 server through a proxy at the pod
	// network's gateway; the test reads the repository directly.
	podS3, err := w.cluster.ProxyToPods(strings.TrimPrefix(srv.Endpoint, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	w.veleroSetupS3("http://"+podS3, bucket)
	image := os.Getenv(moverImageEnv)
	if image == "" {
		image = defaultE2EImage
		if err := w.cluster.LoadMoverImage(w.ctx, image); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(w.controllerClients(), Config{Namespace: veleroNS, PasswordSecret: "blockmover-password", Image: image,
		Identity: "e2e", ServiceAccount: "blockmover-mover", Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(w.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })

	pvc := w.boundPVC("db")
	data := w.fillVolume(pvc, 1, nil)
	w.snapshot("db", "velero-db-1")
	start := time.Now()
	du1 := w.waitUpload(w.dataUpload("b1-db", pvc, "velero-db-1", DefaultName, "default").Name, velerov2.DataUploadPhaseCompleted, 10*time.Minute)
	t.Logf("first backup: DataUpload created → Completed in %v", time.Since(start))
	if du1.Status.Progress.TotalBytes != e2eVolumeSizeBytes || du1.Status.StartTimestamp == nil || du1.Status.Node == "" {
		t.Errorf("status %+v", du1.Status)
	}
	r := openRepository(t, srv, bucket)
	if got := importSnapshot(t, r, du1.Status.SnapshotID); !bytes.Equal(got, data) {
		t.Fatalf("the first snapshot differs from the volume")
	}

	// Change 1 MiB, back up again: incremental on the first.
	data = w.fillVolume(pvc, 2, data)
	w.snapshot("db", "velero-db-2")
	start = time.Now()
	du2 := w.waitUpload(w.dataUpload("b2-db", pvc, "velero-db-2", DefaultName, "default").Name, velerov2.DataUploadPhaseCompleted, 10*time.Minute)
	t.Logf("second backup: DataUpload created → Completed in %v, %d new bytes", time.Since(start), du2.Status.IncrementalBytes)
	if r := du2.Status.DataMoverResult; r == nil || (*r)["parent"] != du1.Status.SnapshotID {
		t.Errorf("second backup's dataMoverResult %v, want parent %s", r, du1.Status.SnapshotID)
	}
	// New: the changed MiB and the content-defined chunks it falls in,
	// at most a largest chunk on each side (where the cuts fall depends on
	// the repository's random polynomial: 2.0–5.0 MB in runs here); far
	// less than the volume.
	maxChunk := int64(chunk.DefaultParams(0).MaxSize)
	if n := du2.Status.IncrementalBytes; n <= 0 || n > 1<<20+2*maxChunk || n >= e2eVolumeSizeBytes {
		t.Errorf("second backup stored %d new bytes for a 1 MiB change", n)
	}
	// A repository opened before the second backup holds the index it
	// loaded then: open it again to see the new packs.
	if got := importSnapshot(t, openRepository(t, srv, bucket), du2.Status.SnapshotID); !bytes.Equal(got, data) {
		t.Fatalf("the second snapshot differs from the volume")
	}

	// Restore the second backup into a new PVC, as Velero's restore does.
	target := w.targetPVC("db-restored", corev1.PersistentVolumeBlock)
	dd := w.dataDownload("r1-db", target.Name, DefaultName, func(d *velerov2.DataDownload) {
		d.Spec.SnapshotID, d.Spec.SnapshotSize = du2.Status.SnapshotID, du2.Status.Progress.TotalBytes
	})
	w.waitDownload(dd.Name, velerov2.DataDownloadPhaseCompleted, 10*time.Minute)
	restored, err := w.admin.Kube.CoreV1().PersistentVolumeClaims(w.ns).Get(w.ctx, target.Name, metav1.GetOptions{})
	if err != nil || restored.Status.Phase != corev1.ClaimBound {
		t.Fatalf("restored PVC: %v %v", restored.Status.Phase, err)
	}
	if got := w.volumeBytes(restored); !bytes.Equal(got, data) {
		t.Fatalf("the restored volume differs from the backed-up one")
	}
}

// veleroSetupS3 is veleroSetup against the test S3 server.
func (w *world) veleroSetupS3(endpoint, bucket string) {
	secrets := w.admin.Kube.CoreV1().Secrets(veleroNS)
	cloud := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s3test.AccessKey, s3test.SecretKey)
	for name, data := range map[string]map[string][]byte{"cloud-credentials": {"cloud": []byte(cloud)}, "blockmover-password": {"MOVER_PASSWORD": []byte("e2e")}} {
		if _, err := secrets.Create(w.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{}); err != nil {
			w.t.Fatal(err)
		}
	}
	loc := &velerov1.BackupStorageLocation{
		TypeMeta:   metav1.TypeMeta{APIVersion: "velero.io/v1", Kind: "BackupStorageLocation"},
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: veleroNS},
		Spec: velerov1.BackupStorageLocationSpec{Provider: "aws", Default: true,
			Config:      map[string]string{"region": s3test.Region, "s3Url": endpoint, "s3ForcePathStyle": "true"},
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: bucket, Prefix: "cluster"}}},
	}
	u, err := toUnstructured(loc)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.admin.Dynamic.Resource(bslGVR()).Namespace(veleroNS).Create(w.ctx, u, metav1.CreateOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

// volumeFile is the test driver's backing file of a bound PVC's volume.
func (w *world) volumeFile(pvc *corev1.PersistentVolumeClaim) string {
	p, err := w.admin.Kube.CoreV1().PersistentVolumeClaims(pvc.Namespace).Get(w.ctx, pvc.Name, metav1.GetOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	pv, err := w.admin.Kube.CoreV1().PersistentVolumes().Get(w.ctx, p.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	return filepath.Join(w.state, "volumes", pv.Spec.CSI.VolumeHandle+".img")
}

func (w *world) volumeBytes(pvc *corev1.PersistentVolumeClaim) []byte {
	b, err := os.ReadFile(w.volumeFile(pvc))
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

// fillVolume writes the volume's bytes (the storage's own backing, as an
// application would through a pod): all of it from seed when old is nil,
// else 1 MiB of old in the middle changed.
func (w *world) fillVolume(pvc *corev1.PersistentVolumeClaim, seed byte, old []byte) []byte {
	data := bytes.Clone(old)
	from, to := 0, e2eVolumeSizeBytes
	if data == nil {
		data = make([]byte, e2eVolumeSizeBytes)
	} else {
		from, to = 7<<20, 8<<20
	}
	x := uint32(seed) * 2654435761
	for i := from; i < to; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		data[i] = byte(x)
	}
	if err := os.WriteFile(w.volumeFile(pvc), data, 0o600); err != nil {
		w.t.Fatal(err)
	}
	return data
}

func openRepository(t *testing.T, srv *s3test.Server, bucket string) *repo.Repository {
	t.Helper()
	s3test.SetTestEnv()
	be, err := location.Open(t.Context(), "s3://"+bucket+"/cluster/blockmover", location.Options{S3: s3.Options{Endpoint: srv.Endpoint, Region: s3test.Region, PathStyle: true}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(t.Context(), be, []byte("e2e"), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func importSnapshot(t *testing.T, r *repo.Repository, id string) []byte {
	t.Helper()
	snap, err := r.FindSnapshot(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "volume")
	dst, err := mover.OpenTarget(path, e2eVolumeSizeBytes, mover.TargetOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mover.Import(t.Context(), r, snap, dst, mover.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
