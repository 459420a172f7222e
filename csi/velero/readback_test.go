package velero

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/repotest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// readBack reads a bound PVC back through a pod on the node, as an
// application would: the mover image (the only image the node has)
// exports source — the raw device /dev/xvda of a Block PVC, or a file
// under /data of a Filesystem PVC mounted there — into a directory
// repository on the host, and the test imports it. size is what source
// holds.
func (w *world) readBack(pvc *corev1.PersistentVolumeClaim, image, source string, size int64) []byte {
	t, ctx := w.t, w.ctx
	t.Helper()
	host, dir := w.hostRepository()
	w.moverPod(pvc, image, host, "reader-"+pvc.Name, true, "export", "--source", source, "--name", "read")
	r := repotest.Open(t, repotest.OpenDir(t, dir), repo.Options{})
	snap, err := r.FindSnapshot(ctx, "latest:read")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Size != size {
		t.Fatalf("the pod read %d bytes of %s, want %d", snap.Size, source, size)
	}
	out := filepath.Join(t.TempDir(), "read")
	dst, err := mover.OpenTarget(out, size, mover.TargetOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mover.Import(ctx, r, snap, dst, mover.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFile writes data as the file /data/NAME of a Filesystem PVC
// through a pod (mover import of a snapshot of data, from a directory
// repository on the host).
func (w *world) writeFile(pvc *corev1.PersistentVolumeClaim, image, name string, data []byte) {
	t := w.t
	t.Helper()
	host, dir := w.hostRepository()
	r := repotest.Open(t, repotest.OpenDir(t, dir), repo.Options{})
	if _, err := mover.Export(w.ctx, bytesSource(data), r, mover.ExportOptions{Volume: "write"}); err != nil {
		t.Fatal(err)
	}
	w.moverPod(pvc, image, host, "writer-"+pvc.Name, false, "import", "--snapshot", "latest:write", "--target", "/data/"+name)
}

// hostRepository makes a directory repository on the host, and its
// password file beside it: the host directory, and the repository's.
func (w *world) hostRepository() (host, dir string) {
	host = w.t.TempDir()
	be, dir := repotest.Dir(w.t, host)
	repotest.Init(w.t, be, repo.InitOptions{})
	if err := os.WriteFile(filepath.Join(host, "pw"), repotest.Password(), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return host, dir
}

// moverPod runs the mover image with args (and the host's repository) in
// a pod that has pvc — at /dev/xvda (Block) or /data (Filesystem,
// read-only when readOnly) — and host at /host, until it succeeds; then
// deletes it.
func (w *world) moverPod(pvc *corev1.PersistentVolumeClaim, image, host, name string, readOnly bool, args ...string) {
	t, ctx := w.t, w.ctx
	t.Helper()
	w.waitFor(time.Minute, "ServiceAccount "+pvc.Namespace+"/default", func() (bool, string) {
		_, err := w.admin.Kube.CoreV1().ServiceAccounts(pvc.Namespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	c := corev1.Container{
		Name: "mover", Image: image, ImagePullPolicy: corev1.PullNever, Command: []string{"/mover"},
		Args:                     append(args, "-r", "/host/repo", "--password-file", "/host/pw", "-q"),
		VolumeMounts:             []corev1.VolumeMount{{Name: "host", MountPath: "/host"}},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		c.VolumeDevices = []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/xvda"}}
	} else {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "data", MountPath: "/data", ReadOnly: readOnly})
	}
	hostDir := corev1.HostPathDirectory
	pods := w.admin.Kube.CoreV1().Pods(pvc.Namespace)
	if _, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{c},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name, ReadOnly: readOnly}}},
				{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: host, Type: &hostDir}}},
			},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.waitFor(2*time.Minute, "pod "+name+" Succeeded", func() (bool, string) {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		seen := string(p.Status.Phase)
		for _, s := range p.Status.ContainerStatuses {
			if s.State.Terminated != nil {
				seen = fmt.Sprintf("exit %d: %s", s.State.Terminated.ExitCode, s.State.Terminated.Message)
			}
		}
		if p.Status.Phase == corev1.PodFailed {
			t.Fatalf("pod %s failed: %s", name, seen)
		}
		return p.Status.Phase == corev1.PodSucceeded, seen
	})
	if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The next pod of this PVC (ReadWriteOnce) may start at once.
	w.waitFor(time.Minute, "pod "+name+" gone", func() (bool, string) {
		_, err := pods.Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// filesystemPVC makes a Filesystem-mode PVC of size through the node's
// provisioner and waits until it is bound.
func (w *world) filesystemPVC(name string, size string) *corev1.PersistentVolumeClaim {
	class := blockClass
	fs := corev1.PersistentVolumeFilesystem
	pvcs := w.admin.Kube.CoreV1().PersistentVolumeClaims(w.ns)
	if _, err := pvcs.Create(w.ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: &class, VolumeMode: &fs,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}, metav1.CreateOptions{}); err != nil {
		w.t.Fatal(err)
	}
	var pvc *corev1.PersistentVolumeClaim
	w.waitFor(time.Minute, "PVC "+name+" bound", func() (bool, string) {
		p, err := pvcs.Get(w.ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pvc = p
		return p.Status.Phase == corev1.ClaimBound, string(p.Status.Phase)
	})
	return pvc
}
