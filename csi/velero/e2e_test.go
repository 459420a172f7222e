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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/csi"
	"github.com/blockmover/blockmover/csi/internal/testcluster"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/location"
	"github.com/blockmover/blockmover/repo/backend/s3"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
// the first, it reads only around the change, as the driver's
// SnapshotMetadata service lists it, and stores only the change); a
// DataDownload restores it into a PVC as Velero's restore leaves it, which
// a pod reads back identical; a Filesystem PVC goes the same way, a file
// written and read back by pods. Then Velero deletes the first backup
// while the controller runs, and the second while it is down: their
// snapshots are forgotten (online, and by the next controller's catch-up),
// another backup's and an untagged snapshot stay, and gc frees the data.
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
	// The first controller: gc not due for a day, orphans not judged for a
	// day (the defaults).
	stopController := w.runController(Config{Namespace: veleroNS, PasswordSecret: "blockmover-password", Image: image,
		Identity: "e2e", ServiceAccount: "blockmover-mover", Resync: 2 * time.Second, Log: testLogger(t)})
	// Velero's backup sync controller, as far as the controller sees it:
	// each location's status.lastSyncedTime, every second.
	w.syncLocations()
	b1, b2 := w.backup("b1"), w.backup("b2")

	pvc := w.boundPVC("db")
	data := w.fillVolume(pvc, 1, nil)
	w.snapshot("db", "velero-db-1")
	start := time.Now()
	du1 := w.waitUpload(w.dataUpload("b1-db", pvc, "velero-db-1", DefaultName, "default", ofBackup(b1)).Name, velerov2.DataUploadPhaseCompleted, 10*time.Minute)
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
	du2 := w.waitUpload(w.dataUpload("b2-db", pvc, "velero-db-2", DefaultName, "default", ofBackup(b2)).Name, velerov2.DataUploadPhaseCompleted, 10*time.Minute)
	t.Logf("second backup: DataUpload created → Completed in %v, %d new bytes", time.Since(start), du2.Status.IncrementalBytes)
	if r := du2.Status.DataMoverResult; r == nil || (*r)["parent"] != du1.Status.SnapshotID {
		t.Errorf("second backup's dataMoverResult %v, want parent %s", r, du1.Status.SnapshotID)
	}
	maxChunk := int64(chunk.DefaultParams(0).MaxSize)
	// Changed-block tracking: the first backup kept its VolumeSnapshot,
	// the second asked the driver's SnapshotMetadata service (the real
	// csi-snapshot-metadata sidecar) for the blocks changed since and read
	// only around them; then the first's snapshot went, the second's
	// stays for the next backup.
	res2 := *du2.Status.DataMoverResult
	read, _ := strconv.ParseInt(res2[resultReadBytes], 10, 64)
	t.Logf("second backup: changed blocks %s, read %d bytes of %d for 1 MiB changed", res2[resultChangedBlocks], read, e2eVolumeSizeBytes)
	// At most from the content-defined cut before the change to the one
	// after it: a largest chunk on each side (1.9 MiB in runs here).
	if maxRead := int64(1<<20) + 2*maxChunk; res2[resultChangedBlocks] != "true" || read <= 0 || read > maxRead {
		t.Errorf("second backup read %d bytes (changed blocks %q), want at most %d", read, res2[resultChangedBlocks], maxRead)
	}
	w.waitFor(time.Minute, "the first backup's base VolumeSnapshot deleted", func() (bool, string) {
		_, err := w.admin.Snapshot.SnapshotV1().VolumeSnapshots(veleroNS).Get(w.ctx, csi.ObjectName(OperationID("du", string(du1.UID))), metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	kept := csi.ObjectName(OperationID("du", string(du2.UID)))
	if _, err := w.admin.Snapshot.SnapshotV1().VolumeSnapshots(veleroNS).Get(w.ctx, kept, metav1.GetOptions{}); err != nil {
		t.Errorf("the second backup's base VolumeSnapshot: %v", err)
	}
	// New: the changed MiB and the content-defined chunks it falls in,
	// at most a largest chunk on each side (where the cuts fall depends on
	// the repository's random polynomial: 2.0–5.0 MB in runs here); far
	// less than the volume.
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
	// A pod reads the restored volume back, as the application would.
	if got := w.readBack(restored, image, "/dev/xvda", e2eVolumeSizeBytes); !bytes.Equal(got, data) {
		t.Fatalf("the restored volume, read through a pod, differs from the backed-up one")
	}

	// A Filesystem PVC in the same backup b2: a pod writes a file into it,
	// the DataUpload exports the volume at block level, a DataDownload
	// restores it into a Filesystem PVC, and a pod reads the file back.
	fsPVC := w.filesystemPVC("files", "16Mi")
	fileData := bytes.Repeat([]byte("blockmover filesystem "), 100000)
	w.writeFile(fsPVC, image, "blob", fileData)
	w.snapshot("files", "velero-files-2")
	duFS := w.waitUpload(w.dataUpload("b2-files", fsPVC, "velero-files-2", DefaultName, "default", ofBackup(b2)).Name, velerov2.DataUploadPhaseCompleted, 10*time.Minute)
	fsTarget := w.targetPVC("files-restored", corev1.PersistentVolumeFilesystem)
	w.waitDownload(w.dataDownload("r1-files", fsTarget.Name, DefaultName, func(d *velerov2.DataDownload) {
		d.Spec.SnapshotID, d.Spec.SnapshotSize = duFS.Status.SnapshotID, duFS.Status.Progress.TotalBytes
	}).Name, velerov2.DataDownloadPhaseCompleted, 10*time.Minute)
	fsRestored, err := w.admin.Kube.CoreV1().PersistentVolumeClaims(w.ns).Get(w.ctx, fsTarget.Name, metav1.GetOptions{})
	if err != nil || fsRestored.Status.Phase != corev1.ClaimBound {
		t.Fatalf("restored Filesystem PVC: %v %v", fsRestored.Status.Phase, err)
	}
	if got := w.readBack(fsRestored, image, "/data/blob", int64(len(fileData))); !bytes.Equal(got, fileData) {
		t.Fatalf("the file read back from the restored Filesystem PVC differs from the one written")
	}

	// Backup deletion. The test reads the repository's snapshot list and
	// pack sizes through lister (no index loaded).
	lister := openRepositoryWith(t, srv, bucket, repo.Options{NoIndex: true})
	defer func() { lister.Close(); lister.Backend().Close() }()
	// One export per DataUpload: the repository holds exactly their three
	// snapshots (a reconcile on a stale cache once ran a finished
	// DataUpload's export again).
	if ids := snapshotIDs(t, lister); len(ids) != 3 || !ids[du1.Status.SnapshotID] || !ids[du2.Status.SnapshotID] || !ids[duFS.Status.SnapshotID] {
		t.Fatalf("repository snapshots %v, want only the DataUploads' %s, %s and %s", ids, du1.Status.SnapshotID, du2.Status.SnapshotID, duFS.Status.SnapshotID)
	}
	// A third backup, b-keep, has a snapshot written
	// here (its Backup exists throughout), and one snapshot belongs to no
	// Velero backup: neither is ever forgotten.
	keep := w.backup("b-keep")
	keepData := bytes.Repeat([]byte("keep"), 1<<18)
	keepID := exportBytes(t, openRepository(t, srv, bucket), keepData, map[string]string{LabelBackupName: keep.Name, LabelBackupUID: string(keep.UID)})
	otherID := exportBytes(t, openRepository(t, srv, bucket), bytes.Repeat([]byte("othr"), 1<<18), map[string]string{"owner": "someone"})

	// Velero deletes b1 while the controller runs: its snapshot is
	// forgotten, the others stay.
	w.deleteBackup(b1)
	w.waitFor(3*time.Minute, "b1's snapshot forgotten", func() (bool, string) {
		ids := snapshotIDs(t, lister)
		return !ids[du1.Status.SnapshotID], fmt.Sprint(ids)
	})
	for _, id := range []string{du2.Status.SnapshotID, duFS.Status.SnapshotID, keepID, otherID} {
		if !snapshotIDs(t, lister)[id] {
			t.Fatalf("snapshot %s forgotten with b1", id)
		}
	}

	// Velero deletes b2 while no controller runs. The next one catches up
	// on start (after Velero's next sync of the location) and forgets
	// b2's snapshot; its gc then frees the data of b1 and b2.
	stopController()
	dataBefore := dataBytes(t, lister)
	w.deleteBackup(b2)
	stopController = w.runController(Config{Namespace: veleroNS, PasswordSecret: "blockmover-password", Image: image,
		Identity: "e2e-2", ServiceAccount: "blockmover-mover", Resync: 2 * time.Second, Log: testLogger(t),
		OrphanGrace: time.Second, GCEvery: time.Second, GCArgs: []string{"--grace=0s"}})
	defer stopController()
	w.waitFor(time.Minute, "the deleted b2's base VolumeSnapshot deleted", func() (bool, string) {
		_, err := w.admin.Snapshot.SnapshotV1().VolumeSnapshots(veleroNS).Get(w.ctx, kept, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	w.waitFor(3*time.Minute, "b2's snapshots forgotten on start", func() (bool, string) {
		ids := snapshotIDs(t, lister)
		return !ids[du2.Status.SnapshotID] && !ids[duFS.Status.SnapshotID], fmt.Sprint(ids)
	})
	w.waitFor(3*time.Minute, "gc frees the data of b1 and b2", func() (bool, string) {
		n := dataBytes(t, lister)
		// b1 and b2 stored the 16 MiB volume and the changed MiB;
		// b-keep's and the other snapshot's data are 2 MiB at most.
		return n < 4<<20, fmt.Sprintf("%d bytes of packs (%d before)", n, dataBefore)
	})
	ids := snapshotIDs(t, lister)
	if !ids[keepID] || !ids[otherID] || len(ids) != 2 {
		t.Fatalf("after the catch-up and gc, snapshots %v; want only b-keep's %s and the untagged %s", ids, keepID, otherID)
	}
	if got := importSnapshotSize(t, openRepository(t, srv, bucket), keepID, int64(len(keepData))); !bytes.Equal(got, keepData) {
		t.Fatalf("b-keep's snapshot differs after gc")
	}
	t.Logf("packs: %d bytes before the catch-up and gc, %d after", dataBefore, dataBytes(t, lister))

	// A wrong password in the controller's Secret: the mover Job fails at
	// once (its podFailurePolicy, exit 12) and the DataUpload ends Failed
	// with one line that names the Secret to fix.
	pwSecrets := w.admin.Kube.CoreV1().Secrets(veleroNS)
	pw, err := pwSecrets.Get(w.ctx, "blockmover-password", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pw.Data = map[string][]byte{"MOVER_PASSWORD": []byte("not the password")}
	if _, err := pwSecrets.Update(w.ctx, pw, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.snapshot("db", "velero-db-3")
	bad := w.waitUpload(w.dataUpload("b-keep-db", pvc, "velero-db-3", DefaultName, "default", ofBackup(keep)).Name, velerov2.DataUploadPhaseFailed, 5*time.Minute)
	if msg := bad.Status.Message; !strings.Contains(msg, "does not open repository") || !strings.Contains(msg, "blockmover-password") || strings.Contains(msg, "\n") {
		t.Errorf("a wrong password's DataUpload message %q, want one line naming the password Secret", msg)
	}
	if ids := snapshotIDs(t, lister); len(ids) != 2 {
		t.Errorf("after the failed backup, snapshots %v; want the two there were", ids)
	}
}

// runController runs a controller with cfg (leader election included)
// until the returned stop is called (at the latest at the test's end).
func (w *world) runController(cfg Config) (stop func()) {
	c, err := New(w.controllerClients(), cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(w.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				w.t.Errorf("controller %s: %v", cfg.Identity, err)
			}
		})
	}
	w.t.Cleanup(stop)
	return stop
}

// syncLocations plays Velero's backup sync controller for the
// controller's sake: it sets every BackupStorageLocation's
// status.lastSyncedTime to now, every second, until the test ends. (The
// Backups themselves the test creates and deletes as Velero would.)
func (w *world) syncLocations() {
	ctx, cancel := context.WithCancel(w.ctx)
	done := make(chan struct{})
	w.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			list, err := w.admin.Dynamic.Resource(bslGVR()).Namespace(veleroNS).List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, l := range list.Items {
					updateObject[velerov1.BackupStorageLocation](ctx, w.admin.Dynamic, bslGVR(), veleroNS, l.GetName(), func(b *velerov1.BackupStorageLocation) bool {
						b.Status.LastSyncedTime = &metav1.Time{Time: time.Now()}
						return true
					})
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

// backup creates a Completed Backup as `velero backup create NAME
// --snapshot-move-data --data-mover blockmover` leaves it.
func (w *world) backup(name string) *velerov1.Backup {
	b := &velerov1.Backup{
		TypeMeta:   metav1.TypeMeta{APIVersion: "velero.io/v1", Kind: "Backup"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: veleroNS, Labels: map[string]string{velerov1.StorageLocationLabel: "default"}},
		Spec: velerov1.BackupSpec{StorageLocation: "default", IncludedNamespaces: []string{w.ns},
			SnapshotMoveData: ptr(true), DataMover: DefaultName},
		Status: velerov1.BackupStatus{Phase: velerov1.BackupPhaseCompleted},
	}
	u, err := toUnstructured(b)
	if err != nil {
		w.t.Fatal(err)
	}
	got, err := w.admin.Dynamic.Resource(backupsGVR()).Namespace(veleroNS).Create(w.ctx, u, metav1.CreateOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	out, err := fromUnstructured[velerov1.Backup](got)
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// ofBackup makes a DataUpload one of b's, as Velero's CSI PVC action
// makes it: labelled with its name and UID, owned by it.
func ofBackup(b *velerov1.Backup) func(*velerov2.DataUpload) {
	return func(d *velerov2.DataUpload) {
		d.Labels[velerov1.BackupNameLabel], d.Labels[velerov1.BackupUIDLabel] = b.Name, string(b.UID)
		d.OwnerReferences = []metav1.OwnerReference{{APIVersion: "velero.io/v1", Kind: "Backup", Name: b.Name, UID: b.UID, Controller: ptr(true)}}
	}
}

// deleteBackup deletes b as Velero's backup deletion controller does
// (pkg/controller/backup_deletion_controller.go, v1.18.3): the Backup's
// phase to Deleting, its DataUploads deleted, then the Backup.
func (w *world) deleteBackup(b *velerov1.Backup) {
	if _, err := updateObject[velerov1.Backup](w.ctx, w.admin.Dynamic, backupsGVR(), veleroNS, b.Name, func(x *velerov1.Backup) bool {
		x.Status.Phase = velerov1.BackupPhaseDeleting
		return true
	}); err != nil {
		w.t.Fatal(err)
	}
	uploads := w.admin.Dynamic.Resource(uploadsGVR()).Namespace(veleroNS)
	if err := uploads.DeleteCollection(w.ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: velerov1.BackupNameLabel + "=" + b.Name}); err != nil {
		w.t.Fatal(err)
	}
	if err := w.admin.Dynamic.Resource(backupsGVR()).Namespace(veleroNS).Delete(w.ctx, b.Name, metav1.DeleteOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

// snapshotIDs lists the repository's snapshots.
func snapshotIDs(t *testing.T, r *repo.Repository) map[string]bool {
	t.Helper()
	snaps, _, err := r.ReadSnapshots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, s := range snaps {
		ids[s.ID.String()] = true
	}
	return ids
}

// dataBytes is the size of the repository's packs.
func dataBytes(t *testing.T, r *repo.Repository) int64 {
	t.Helper()
	var n int64
	if err := r.Backend().List(t.Context(), "data/", func(o backend.ObjectInfo) error {
		n += o.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// exportBytes writes data as a snapshot with tags into r and returns its
// ID.
func exportBytes(t *testing.T, r *repo.Repository, data []byte, tags map[string]string) string {
	t.Helper()
	res, err := mover.Export(t.Context(), bytesSource(data), r, mover.ExportOptions{Volume: "test-" + tags[LabelBackupName], Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	return res.Snapshot.ID.String()
}

type bytesSource []byte

func (b bytesSource) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(b).ReadAt(p, off)
}
func (b bytesSource) Size() int64 { return int64(len(b)) }

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

// fillVolume writes the volume's bytes (into the storage's own backing,
// quicker than a pod and the same to a snapshot): all of it from seed when old is nil,
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
	r := openRepositoryWith(t, srv, bucket, repo.Options{})
	t.Cleanup(func() { r.Close() })
	return r
}

// openRepositoryWith opens the test's repository; the caller closes it.
func openRepositoryWith(t *testing.T, srv *s3test.Server, bucket string, opts repo.Options) *repo.Repository {
	t.Helper()
	s3test.SetTestEnv()
	be, err := location.Open(t.Context(), "s3://"+bucket+"/cluster/plugins/blockmover", location.Options{S3: s3.Options{Endpoint: srv.Endpoint, Region: s3test.Region, PathStyle: true}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(t.Context(), be, []byte("e2e"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func importSnapshot(t *testing.T, r *repo.Repository, id string) []byte {
	t.Helper()
	return importSnapshotSize(t, r, id, e2eVolumeSizeBytes)
}

func importSnapshotSize(t *testing.T, r *repo.Repository, id string, size int64) []byte {
	t.Helper()
	snap, err := r.FindSnapshot(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "volume")
	dst, err := mover.OpenTarget(path, size, mover.TargetOptions{Create: true})
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

func ptr[T any](v T) *T { return &v }
