package velero

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/blockmover/blockmover/csi"
	"github.com/blockmover/blockmover/csi/internal/testdriver"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// targetPVC creates a PVC as Velero's restore does for a data mover
// (pkg/restore/actions/csi/pvc_action.go): no volumeName, and a selector
// on velero.io/dynamic-pv-restore that no PV matches, so it stays Pending
// for the mover to bind.
func (w *world) targetPVC(name string, mode corev1.PersistentVolumeMode) *corev1.PersistentVolumeClaim {
	class := blockClass
	pvc, err := w.admin.Kube.CoreV1().PersistentVolumeClaims(w.ns).Create(w.ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{velerov1.RestoreNameLabel: "r1"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: &class, VolumeMode: &mode,
			Selector:  &metav1.LabelSelector{MatchLabels: map[string]string{velerov1.DynamicPVRestoreLabel: w.ns + "." + name + ".x7k2p"}},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	return pvc
}

// restoredVolume makes what a finished import leaves: a volume from the
// driver, its PV (reclaim policy Delete, as a provisioner makes it) and
// the restore PVC in Velero's namespace, bound by the real PV binder.
func (w *world) restoredVolume(pvName, pvcName string, mode corev1.PersistentVolumeMode) {
	t, ctx := w.t, w.ctx
	vol, err := w.driver.CreateVolume(ctx, newCreateVolume(pvName))
	if err != nil {
		t.Fatal(err)
	}
	class := blockClass
	if _, err := w.admin.Kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(vol.Volume.CapacityBytes, resource.BinarySI)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              class,
			VolumeMode:                    &mode,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: testdriver.DefaultName, VolumeHandle: vol.Volume.VolumeId}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.Kube.CoreV1().PersistentVolumeClaims(veleroNS).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: pvcName},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: &class, VolumeMode: &mode,
			VolumeName: pvName,
			Resources:  corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestRebindVolume: the volume of a filled restore PVC is handed to a
// target PVC as Velero creates it, by the real PV binder, for Block and
// Filesystem targets: the PV retained meanwhile, the selector's labels
// copied, the reclaim policy restored, the restore PVC gone.
func TestRebindVolume(t *testing.T) {
	w := startWorld(t, nil)
	c, err := New(w.controllerClients(), Config{Namespace: veleroNS, PasswordSecret: "p", Image: "i", Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []corev1.PersistentVolumeMode{corev1.PersistentVolumeBlock, corev1.PersistentVolumeFilesystem} {
		t.Run(string(mode), func(t *testing.T) {
			name := strings.ToLower(string(mode))
			op := "dd-" + name
			target := w.targetPVC("restored-"+name, mode)
			w.restoredVolume("pv-restored-"+name, "restore-"+name, mode)
			if err := c.rebind(w.ctx, op, "restore-"+name, target, csi.Timing{Poll: 200 * time.Millisecond, Bind: time.Minute}); err != nil {
				t.Fatal(err)
			}
			pvc, err := w.admin.Kube.CoreV1().PersistentVolumeClaims(w.ns).Get(w.ctx, target.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pv, err := w.admin.Kube.CoreV1().PersistentVolumes().Get(w.ctx, "pv-restored-"+name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != pv.Name || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != pvc.UID {
				t.Errorf("PVC %s volume %q; PV claimRef %+v", pvc.Status.Phase, pvc.Spec.VolumeName, pv.Spec.ClaimRef)
			}
			sel := target.Spec.Selector.MatchLabels[velerov1.DynamicPVRestoreLabel]
			if pv.Labels[velerov1.DynamicPVRestoreLabel] != sel || pv.Labels[csi.LabelOperation] != op {
				t.Errorf("PV labels %v", pv.Labels)
			}
			if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || pv.Annotations[AnnotationReclaimPolicy] != "" {
				t.Errorf("PV reclaim policy %s, annotations %v", pv.Spec.PersistentVolumeReclaimPolicy, pv.Annotations)
			}
			if _, err := w.admin.Kube.CoreV1().PersistentVolumeClaims(veleroNS).Get(w.ctx, "restore-"+name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("restore PVC: %v", err)
			}
		})
	}
}

// TestDataDownloadNoPod: a DataDownload created before its target PVC
// waits for it (Accepted, no Job), then imports into a new volume of the
// target's class and mode through a mover Job in Velero's namespace;
// another mover's DataDownload is left alone; cancel cleans up and never
// touches the target PVC.
func TestDataDownloadNoPod(t *testing.T) {
	w := startWorld(t, nil)
	ctx := w.ctx
	w.veleroSetup()
	w.controller("replica-1")
	other := w.dataDownload("r1-other", "db", "velero")
	dd := w.dataDownload("r1-db", "db", DefaultName)
	op := OperationID("dd", string(dd.UID))

	w.waitDownload(dd.Name, velerov2.DataDownloadPhaseAccepted, time.Minute)
	time.Sleep(3 * time.Second)
	if got := w.getDownload(dd.Name); got.Status.Phase != velerov2.DataDownloadPhaseAccepted {
		t.Errorf("phase without a target PVC: %s", got.Status.Phase)
	}
	if _, err := w.admin.Kube.BatchV1().Jobs(veleroNS).Get(ctx, csi.ObjectName(op), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Job before the target PVC exists: %v", err)
	}
	target := w.targetPVC("db", corev1.PersistentVolumeBlock)
	w.waitDownload(dd.Name, velerov2.DataDownloadPhasePrepared, time.Minute)
	w.waitFor(time.Minute, "the import Job and its PVC", func() (bool, string) {
		job, err1 := w.admin.Kube.BatchV1().Jobs(veleroNS).Get(ctx, csi.ObjectName(op), metav1.GetOptions{})
		pvc, err2 := w.admin.Kube.CoreV1().PersistentVolumeClaims(veleroNS).Get(ctx, restorePVCName(dd.UID), metav1.GetOptions{})
		if err1 != nil || err2 != nil {
			return false, fmt.Sprintf("%v; %v", err1, err2)
		}
		args := strings.Join(job.Spec.Template.Spec.Containers[0].Args, " ")
		ok := strings.Contains(args, "import --snapshot=0123abcd") && *pvc.Spec.StorageClassName == blockClass &&
			*pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock
		return ok, args
	})
	if o := w.getDownload(other.Name); o.Status.Phase != "" {
		t.Errorf("another mover's DataDownload: phase %q", o.Status.Phase)
	}

	if _, err := updateObject[velerov2.DataDownload](ctx, w.admin.Dynamic, downloadsGVR(), veleroNS, dd.Name, func(d *velerov2.DataDownload) bool {
		d.Spec.Cancel = true
		return true
	}); err != nil {
		t.Fatal(err)
	}
	w.waitDownload(dd.Name, velerov2.DataDownloadPhaseCanceled, time.Minute)
	w.waitFor(time.Minute, "the Job and the restore PVC gone", func() (bool, string) {
		_, err1 := w.admin.Kube.BatchV1().Jobs(veleroNS).Get(ctx, csi.ObjectName(op), metav1.GetOptions{})
		_, err2 := w.admin.Kube.CoreV1().PersistentVolumeClaims(veleroNS).Get(ctx, restorePVCName(dd.UID), metav1.GetOptions{})
		return apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2), fmt.Sprintf("%v; %v", err1, err2)
	})
	if got, err := w.admin.Kube.CoreV1().PersistentVolumeClaims(w.ns).Get(ctx, target.Name, metav1.GetOptions{}); err != nil || got.DeletionTimestamp != nil {
		t.Errorf("target PVC after cancel: %v", err)
	}
}

// dataDownload creates a DataDownload as Velero 1.18's restore does
// (pkg/restore/actions/csi/pvc_action.go: newDataDownload).
func (w *world) dataDownload(name, pvc, mover string, edit ...func(*velerov2.DataDownload)) *velerov2.DataDownload {
	dd := &velerov2.DataDownload{
		TypeMeta: metav1.TypeMeta{APIVersion: "velero.io/v2alpha1", Kind: "DataDownload"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: veleroNS, Labels: map[string]string{
			velerov1.RestoreNameLabel: "r1", velerov1.RestoreUIDLabel: "7d1c0000-0000-4000-8000-000000000002",
			velerov1.AsyncOperationIDLabel: "dd-7d1c0000.x7k2p"}},
		Spec: velerov2.DataDownloadSpec{
			TargetVolume:          velerov2.TargetVolumeSpec{PVC: pvc, Namespace: w.ns},
			BackupStorageLocation: "default", DataMover: mover, SnapshotID: "0123abcd", SourceNamespace: w.ns,
			OperationTimeout: metav1.Duration{Duration: 10 * time.Minute}, SnapshotSize: 16 << 20,
		},
	}
	for _, e := range edit {
		e(dd)
	}
	u, err := toUnstructured(dd)
	if err != nil {
		w.t.Fatal(err)
	}
	got, err := w.admin.Dynamic.Resource(downloadsGVR()).Namespace(veleroNS).Create(w.ctx, u, metav1.CreateOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	out, err := fromUnstructured[velerov2.DataDownload](got)
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

func (w *world) getDownload(name string) *velerov2.DataDownload {
	dd, err := getObject[velerov2.DataDownload](w.ctx, w.admin.Dynamic, downloadsGVR(), veleroNS, name)
	if err != nil {
		w.t.Fatal(err)
	}
	return dd
}

func (w *world) waitDownload(name string, phase velerov2.DataDownloadPhase, timeout time.Duration) *velerov2.DataDownload {
	var dd *velerov2.DataDownload
	w.waitFor(timeout, "DataDownload "+name+" "+string(phase), func() (bool, string) {
		dd = w.getDownload(name)
		return dd.Status.Phase == phase, fmt.Sprintf("phase %q message %q", dd.Status.Phase, dd.Status.Message)
	})
	return dd
}
