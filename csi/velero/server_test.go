package velero

// TestVeleroServer runs the real Velero server (v1.18.3, built from the
// module proxy by hack/install-velero.sh with its S3 object-store plugin,
// velero-plugin-for-aws v1.14.3) in a pod of the test cluster, as `velero
// install` deploys it, and drives it with the velero CLI: Velero itself
// creates the DataUploads and the DataDownload that the controller serves,
// and `velero backup delete` deletes the backup whose snapshot the
// controller then forgets.
// It is opt-in (BLOCKMOVER_VELERO_SERVER=1, about 3 minutes) and skips
// without the binaries.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const (
	veleroServerEnv = "BLOCKMOVER_VELERO_SERVER"
	veleroBinary    = "velero-v1.18.3"
	awsPluginBinary = "velero-plugin-for-aws-v1.14.3"
)

// veleroBinaries finds hack/install-velero.sh's binaries, or skips.
func veleroBinaries(t *testing.T) (velero, plugin string) {
	t.Helper()
	if os.Getenv(veleroServerEnv) != "1" {
		t.Skipf("opt-in: %s=1 runs the Velero server (hack/install-velero.sh builds it)", veleroServerEnv)
	}
	bin := os.Getenv("GOBIN")
	if bin == "" {
		out, err := exec.Command("go", "env", "GOPATH").Output()
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(strings.Split(strings.TrimSpace(string(out)), ":")[0], "bin")
	}
	velero, plugin = filepath.Join(bin, veleroBinary), filepath.Join(bin, awsPluginBinary)
	for _, b := range []string{velero, plugin} {
		if _, err := os.Stat(b); err != nil {
			t.Skipf("%v: run hack/install-velero.sh", err)
		}
	}
	return velero, plugin
}

func TestVeleroServer(t *testing.T) {
	veleroBin, pluginBin := veleroBinaries(t)
	w := startWorld(t, e2eCluster(t))
	ctx := w.ctx
	// Every Velero CRD (the server checks for them).
	if err := w.cluster.InstallCRDs(ctx, allVeleroCRDs(t)...); err != nil {
		t.Fatal(err)
	}
	s3test.SetTestEnv()
	srv := s3test.Start(t, false)
	bucket := srv.NewBucket(t, false)
	podS3, err := w.cluster.ProxyToPods(strings.TrimPrefix(srv.Endpoint, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	w.veleroSetupS3("http://"+podS3, bucket)
	image := defaultE2EImage
	if err := w.cluster.LoadMoverImage(ctx, image); err != nil {
		t.Fatal(err)
	}
	// The class Velero's CSI action picks for the driver.
	vsc, err := w.admin.Snapshot.SnapshotV1().VolumeSnapshotClasses().Get(ctx, snapClass, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vsc.Labels = map[string]string{"velero.io/csi-volumesnapshot-class": "true"}
	if _, err := w.admin.Snapshot.SnapshotV1().VolumeSnapshotClasses().Update(ctx, vsc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.runVeleroServer(image, veleroBin, pluginBin)
	w.runController(Config{Namespace: veleroNS, PasswordSecret: "blockmover-password", Image: image,
		Identity: "server-test", ServiceAccount: "blockmover-mover", Resync: 2 * time.Second, Log: testLogger(t)})
	w.waitFor(3*time.Minute, "BackupStorageLocation default Available", func() (bool, string) {
		loc, err := getObject[velerov1.BackupStorageLocation](ctx, w.admin.Dynamic, bslGVR(), veleroNS, "default")
		if err != nil {
			return false, err.Error()
		}
		return loc.Status.Phase == velerov1.BackupStorageLocationPhaseAvailable, fmt.Sprintf("%s %s", loc.Status.Phase, loc.Status.Message)
	})

	pvc := w.boundPVC("db")
	data := w.fillVolume(pvc, 1, nil)
	kubeconfig, err := w.cluster.Kubeconfig("velero-cli", "velero-cli", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, veleroBin, append(args, "--kubeconfig", kubeconfig, "--namespace", veleroNS)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("velero %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	backup := func(name string) {
		t.Helper()
		start := time.Now()
		t.Log(cli("backup", "create", name, "--include-namespaces", w.ns, "--snapshot-move-data", "--data-mover", DefaultName))
		w.waitFor(5*time.Minute, "Backup "+name+" Completed", func() (bool, string) {
			b, err := getObject[velerov1.Backup](ctx, w.admin.Dynamic, backupsGVR(), veleroNS, name)
			if err != nil {
				return false, err.Error()
			}
			if b.Status.Phase == velerov1.BackupPhaseFailed || b.Status.Phase == velerov1.BackupPhasePartiallyFailed {
				t.Fatalf("Backup %s %s: %s", name, b.Status.Phase, cli("backup", "describe", name, "--details"))
			}
			return b.Status.Phase == velerov1.BackupPhaseCompleted, string(b.Status.Phase)
		})
		t.Logf("velero backup create %s → Completed in %v", name, time.Since(start))
	}
	// uploadOf is the one DataUpload Velero made for backup name.
	uploadOf := func(name string) *velerov2.DataUpload {
		t.Helper()
		list, err := w.admin.Dynamic.Resource(uploadsGVR()).Namespace(veleroNS).List(ctx, metav1.ListOptions{
			LabelSelector: labels.SelectorFromSet(labels.Set{velerov1.BackupNameLabel: name}).String()})
		if err != nil || len(list.Items) != 1 {
			t.Fatalf("DataUploads of %s: %d (%v)", name, len(list.Items), err)
		}
		du, err := fromUnstructured[velerov2.DataUpload](&list.Items[0])
		if err != nil {
			t.Fatal(err)
		}
		if du.Spec.DataMover != DefaultName || du.Status.Phase != velerov2.DataUploadPhaseCompleted {
			t.Fatalf("Velero's DataUpload of %s: mover %q phase %s", name, du.Spec.DataMover, du.Status.Phase)
		}
		return du
	}
	backup("b1")
	du := uploadOf("b1")
	if got := importSnapshot(t, openRepository(t, srv, bucket), du.Status.SnapshotID); !bytes.Equal(got, data) {
		t.Fatalf("the snapshot of Velero's DataUpload differs from the volume")
	}

	start := time.Now()
	t.Log(cli("restore", "create", "r1", "--from-backup", "b1", "--namespace-mappings", w.ns+":restored"))
	w.waitFor(5*time.Minute, "Restore r1 Completed", func() (bool, string) {
		r, err := getObject[velerov1.Restore](ctx, w.admin.Dynamic, velerov1.SchemeGroupVersion.WithResource("restores"), veleroNS, "r1")
		if err != nil {
			return false, err.Error()
		}
		if r.Status.Phase == velerov1.RestorePhaseFailed || r.Status.Phase == velerov1.RestorePhasePartiallyFailed {
			t.Fatalf("Restore r1 %s: %s", r.Status.Phase, cli("restore", "describe", "r1", "--details"))
		}
		return r.Status.Phase == velerov1.RestorePhaseCompleted, string(r.Status.Phase)
	})
	t.Logf("velero restore create → Completed in %v", time.Since(start))
	dds, err := w.admin.Dynamic.Resource(downloadsGVR()).Namespace(veleroNS).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{velerov1.RestoreNameLabel: "r1"}).String()})
	if err != nil || len(dds.Items) != 1 {
		t.Fatalf("DataDownloads of r1: %d (%v)", len(dds.Items), err)
	}
	dd, err := fromUnstructured[velerov2.DataDownload](&dds.Items[0])
	if err != nil {
		t.Fatal(err)
	}
	if dd.Spec.DataMover != DefaultName || dd.Spec.SnapshotID != du.Status.SnapshotID || dd.Status.Phase != velerov2.DataDownloadPhaseCompleted {
		t.Fatalf("Velero's DataDownload: mover %q snapshot %q phase %s", dd.Spec.DataMover, dd.Spec.SnapshotID, dd.Status.Phase)
	}
	restored, err := w.admin.Kube.CoreV1().PersistentVolumeClaims("restored").Get(ctx, "db", metav1.GetOptions{})
	if err != nil || restored.Status.Phase != corev1.ClaimBound {
		t.Fatalf("restored PVC: %v", err)
	}
	if got := w.readBack(restored, image, "/dev/xvda", e2eVolumeSizeBytes); !bytes.Equal(got, data) {
		t.Fatalf("the volume Velero restored through blockmover, read through a pod, differs")
	}

	// A second backup after 1 MiB changed: incremental on the first, with
	// the changed blocks.
	data = w.fillVolume(pvc, 2, data)
	backup("b2")
	du2 := uploadOf("b2")
	if r := du2.Status.DataMoverResult; r == nil || (*r)["parent"] != du.Status.SnapshotID || (*r)[resultChangedBlocks] != "true" {
		t.Errorf("b2's dataMoverResult %v: want parent %s and changed blocks", r, du.Status.SnapshotID)
	}
	t.Logf("b2 read %s bytes", (*du2.Status.DataMoverResult)[resultReadBytes])
	if got := importSnapshot(t, openRepository(t, srv, bucket), du2.Status.SnapshotID); !bytes.Equal(got, data) {
		t.Fatalf("the snapshot of b2 differs from the volume")
	}

	// velero backup delete b1: Velero deletes it; the controller forgets
	// its snapshot and keeps b2's.
	t.Log(cli("backup", "delete", "b1", "--confirm"))
	lister := openRepositoryWith(t, srv, bucket, repo.Options{NoIndex: true})
	defer func() { lister.Close(); lister.Backend().Close() }()
	w.waitFor(3*time.Minute, "b1's snapshot forgotten", func() (bool, string) {
		ids := snapshotIDs(t, lister)
		dbrs, err := w.admin.Dynamic.Resource(velerov1.SchemeGroupVersion.WithResource("deletebackuprequests")).Namespace(veleroNS).List(ctx, metav1.ListOptions{})
		var state []string
		for i := range dbrs.Items {
			if d, err := fromUnstructured[velerov1.DeleteBackupRequest](&dbrs.Items[i]); err == nil {
				state = append(state, fmt.Sprintf("%s %s %v", d.Name, d.Status.Phase, d.Status.Errors))
			}
		}
		return !ids[du.Status.SnapshotID], fmt.Sprintf("snapshots %v; DeleteBackupRequests %v (%v)", ids, state, err)
	})
	if ids := snapshotIDs(t, lister); len(ids) != 1 || !ids[du2.Status.SnapshotID] {
		t.Errorf("after velero backup delete b1, snapshots %v; want only b2's %s", ids, du2.Status.SnapshotID)
	}
}

// allVeleroCRDs are every CRD file of Velero's module.
func allVeleroCRDs(t *testing.T) []string {
	t.Helper()
	dir := filepath.Dir(filepath.Dir(filepath.Dir(veleroCRDs(t)[0]))) // config/crd
	var files []string
	for _, v := range []string{"v1", "v2alpha1"} {
		m, err := filepath.Glob(filepath.Join(dir, v, "bases", "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	return files
}

// runVeleroServer runs `velero server` as `velero install` deploys it:
// in Velero's namespace, as a ServiceAccount bound to cluster-admin, the
// credentials Secret at /credentials, the plugin in /plugins. The binaries
// come from a hostPath (the node has only the mover image, whose root
// holds nothing else).
func (w *world) runVeleroServer(image, veleroBin, pluginBin string) {
	t, ctx := w.t, w.ctx
	host := t.TempDir()
	if err := os.Chmod(host, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{veleroBin: "velero", pluginBin: "plugins/velero-plugin-for-aws"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(host, dst)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(host, dst), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kube := w.admin.Kube
	if _, err := kube.CoreV1().ServiceAccounts(veleroNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "velero"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "velero"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "velero", Namespace: veleroNS}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hostDir := corev1.HostPathDirectory
	empty := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	// A Deployment named velero, as `velero install` makes it: Velero's
	// pod volume restore action reads it.
	podLabels := map[string]string{"component": "velero", "deploy": "velero"}
	one := int32(1)
	if _, err := kube.AppsV1().Deployments(veleroNS).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "velero", Labels: podLabels},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: podLabels}, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
			Spec: corev1.PodSpec{
				ServiceAccountName: "velero",
				RestartPolicy:      corev1.RestartPolicyAlways,
				Containers: []corev1.Container{{
					Name: "velero", Image: image, ImagePullPolicy: corev1.PullNever,
					Command: []string{"/host/velero"},
					Args: []string{"server", "--features=EnableCSI", "--uploader-type=kopia", "--plugin-dir=/host/plugins", "--backup-sync-period=10s",
						"--item-operation-sync-frequency=2s", "--log-level=info"},
					Env: []corev1.EnvVar{
						{Name: "VELERO_SCRATCH_DIR", Value: "/scratch"},
						{Name: "VELERO_NAMESPACE", Value: veleroNS},
						{Name: "AWS_SHARED_CREDENTIALS_FILE", Value: "/credentials/cloud"},
						{Name: "HOME", Value: "/scratch"},
					},
					VolumeMounts: []corev1.VolumeMount{
						{Name: "host", MountPath: "/host", ReadOnly: true},
						{Name: "scratch", MountPath: "/scratch"},
						{Name: "tmp", MountPath: "/tmp"},
						{Name: "cloud-credentials", MountPath: "/credentials"},
					},
				}},
				Volumes: []corev1.Volume{
					{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: host, Type: &hostDir}}},
					{Name: "scratch", VolumeSource: empty},
					{Name: "tmp", VolumeSource: empty},
					{Name: "cloud-credentials", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "cloud-credentials"}}},
				},
			},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod string
	t.Cleanup(func() {
		if t.Failed() && pod != "" {
			logs, err := kube.CoreV1().Pods(veleroNS).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(ctx)
			t.Logf("velero server log (%v):\n%s", err, logs)
		}
	})
	w.waitFor(2*time.Minute, "the Velero server running", func() (bool, string) {
		pods, err := kube.CoreV1().Pods(veleroNS).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(podLabels).String()})
		if err != nil || len(pods.Items) == 0 {
			return false, fmt.Sprint(err)
		}
		p := pods.Items[0]
		pod = p.Name
		return p.Status.Phase == corev1.PodRunning, fmt.Sprintf("%s %+v", p.Status.Phase, p.Status.ContainerStatuses)
	})
}
