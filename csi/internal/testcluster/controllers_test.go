package testcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/blockmover/blockmover/csi/internal/testdriver"
	"github.com/container-storage-interface/spec/lib/go/csi"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// startControllers starts a cluster with the controllers, skipping the
// test when their binaries are not built, and checks in t.Cleanup that
// Stop leaves no process behind.
func startControllers(t *testing.T) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c, err := StartWith(ctx, dir, Options{Controllers: true})
	switch {
	case errors.Is(err, ErrNoClusterTools):
		t.Skipf("%v", err) // names make cluster-tools
	case errors.Is(err, ErrNoBinaries) && os.Getenv(SkipEnv) == "1":
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
				t.Errorf("process %d still there after Stop (kill 0: %v)", pid, err)
			}
		}
	})
	return c
}

// waitFor polls cond every 100 ms until it is true, failing the test
// after timeout with what was last seen.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v (last: %s)", what, timeout, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestControllers: the real kube-controller-manager, kube-scheduler and
// snapshot-controller act on the objects a test creates.
func TestControllers(t *testing.T) {
	c := startControllers(t)
	ctx := t.Context()
	kube := kubernetes.NewForConfigOrDie(c.Config)
	snaps := snapclient.NewForConfigOrDie(c.Config)
	const ns = "controllers"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The serviceaccount controller creates "default" (the ServiceAccount
	// admission plugin, now on, needs it for every pod), the
	// root-ca-cert-publisher this cluster's CA.
	waitFor(t, time.Minute, "ServiceAccount default", func() (bool, string) {
		_, err := kube.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	waitFor(t, time.Minute, "ConfigMap kube-root-ca.crt", func() (bool, string) {
		cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil && cm.Data["ca.crt"] == string(c.pki.CAPEM()), fmt.Sprint(err)
	})

	t.Run("job", func(t *testing.T) {
		job, err := kube.BatchV1().Jobs(ns).Create(ctx, &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: "hello"},
			Spec: batchv1.JobSpec{
				BackoffLimit: new(int32),
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers:    []corev1.Container{{Name: "hello", Image: "registry.invalid/hello:1", Command: []string{"true"}}},
				}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The job controller creates the pod; with no node, the scheduler
		// reports it Unschedulable.
		var pod corev1.Pod
		waitFor(t, time.Minute, "the Job's pod, unschedulable", func() (bool, string) {
			pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=hello"})
			if err != nil || len(pods.Items) == 0 {
				return false, fmt.Sprintf("no pod (%v)", err)
			}
			pod = pods.Items[0]
			for _, cond := range pod.Status.Conditions {
				if cond.Type == corev1.PodScheduled {
					return cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable, cond.Message
				}
			}
			return false, "no PodScheduled condition"
		})
		if ref := metav1.GetControllerOf(&pod); ref == nil || ref.Kind != "Job" || ref.UID != job.UID {
			t.Errorf("pod %s is controlled by %+v, want the Job %s", pod.Name, ref, job.UID)
		}
		if pod.Status.Phase != corev1.PodPending || pod.Spec.NodeName != "" {
			t.Errorf("pod %s: phase %s on node %q, want Pending on none", pod.Name, pod.Status.Phase, pod.Spec.NodeName)
		}
		// The ServiceAccount admission plugin mounted the token.
		if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Projected != nil }) {
			t.Errorf("pod %s has no projected ServiceAccount token volume", pod.Name)
		}

		// The garbage collector deletes the pod of a deleted Job.
		bg := metav1.DeletePropagationBackground
		if err := kube.BatchV1().Jobs(ns).Delete(ctx, "hello", metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "the pod deleted by the garbage collector", func() (bool, string) {
			_, err := kube.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	})

	t.Run("pv-binder", func(t *testing.T) {
		const class = "manual"
		pv, err := kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "pv-static"},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              class,
				PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
					Driver: testdriver.DefaultName, VolumeHandle: "vol-static",
				}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pvc, err := kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "claim"},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: new(class),
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("512Mi")}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The StorageObjectInUseProtection admission plugin adds the
		// finalizer that the pvc-protection controller removes.
		if !slices.Contains(pvc.Finalizers, "kubernetes.io/pvc-protection") {
			t.Errorf("PVC finalizers %v, want kubernetes.io/pvc-protection", pvc.Finalizers)
		}
		waitFor(t, time.Minute, "PVC and PV bound to each other", func() (bool, string) {
			pvc, err := kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "claim", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			pv, err := kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			ok := pvc.Status.Phase == corev1.ClaimBound && pvc.Spec.VolumeName == pv.Name &&
				pv.Status.Phase == corev1.VolumeBound && pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.UID == pvc.UID
			return ok, fmt.Sprintf("PVC %s (volume %q), PV %s", pvc.Status.Phase, pvc.Spec.VolumeName, pv.Status.Phase)
		})

		// Deleted while no pod uses it, the PVC goes (pvc-protection lets
		// it) and the retained PV is Released.
		if err := kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "claim", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "PVC deleted, PV Released", func() (bool, string) {
			_, err := kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "claim", metav1.GetOptions{})
			pv, perr := kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			if perr != nil {
				return false, perr.Error()
			}
			return apierrors.IsNotFound(err) && pv.Status.Phase == corev1.VolumeReleased, fmt.Sprintf("PVC: %v, PV %s", err, pv.Status.Phase)
		})
	})

	t.Run("snapshot-static", func(t *testing.T) {
		content, err := snaps.SnapshotV1().VolumeSnapshotContents().Create(ctx, &snapv1.VolumeSnapshotContent{
			ObjectMeta: metav1.ObjectMeta{Name: "content-static"},
			Spec: snapv1.VolumeSnapshotContentSpec{
				DeletionPolicy:    snapv1.VolumeSnapshotContentRetain,
				Driver:            testdriver.DefaultName,
				Source:            snapv1.VolumeSnapshotContentSource{SnapshotHandle: new("snap-static")},
				VolumeSnapshotRef: corev1.ObjectReference{Namespace: ns, Name: "snap"},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vs, err := snaps.SnapshotV1().VolumeSnapshots(ns).Create(ctx, &snapv1.VolumeSnapshot{
			ObjectMeta: metav1.ObjectMeta{Name: "snap"},
			Spec:       snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{VolumeSnapshotContentName: new(content.Name)}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Bound both ways, and protected while it may be a source; not
		// ready, since no csi-snapshotter has asked the driver about the
		// handle (and the driver has none such).
		waitFor(t, time.Minute, "VolumeSnapshot bound to its content", func() (bool, string) {
			vs, err := snaps.SnapshotV1().VolumeSnapshots(ns).Get(ctx, "snap", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			content, err := snaps.SnapshotV1().VolumeSnapshotContents().Get(ctx, content.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil {
				return false, "no status.boundVolumeSnapshotContentName"
			}
			return *vs.Status.BoundVolumeSnapshotContentName == content.Name && content.Spec.VolumeSnapshotRef.UID == vs.UID &&
					slices.Contains(vs.Finalizers, "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"),
				fmt.Sprintf("bound to %s, content's ref UID %q, finalizers %v", *vs.Status.BoundVolumeSnapshotContentName, content.Spec.VolumeSnapshotRef.UID, vs.Finalizers)
		})
		vs, err = snaps.SnapshotV1().VolumeSnapshots(ns).Get(ctx, vs.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if vs.Status.ReadyToUse != nil && *vs.Status.ReadyToUse {
			t.Errorf("VolumeSnapshot ready without a csi-snapshotter")
		}
	})

	t.Run("csi-snapshotter", func(t *testing.T) {
		testSnapshotter(t, c, kube, snaps, ns)
	})
}

// testSnapshotter runs the test driver on a unix socket and the real
// csi-snapshotter against it: a VolumeSnapshot of a PVC becomes a real
// snapshot file, ready to use, and deleting it deletes the file.
func testSnapshotter(t *testing.T, c *Cluster, kube kubernetes.Interface, snaps snapclient.Interface, ns string) {
	ctx := t.Context()
	dir := t.TempDir()
	d, err := testdriver.New(testdriver.Config{StateDir: filepath.Join(dir, "state"), NodeID: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
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
	if err := c.StartCSISnapshotter(ctx, sock); err != nil {
		t.Fatal(err)
	}

	// A volume made through the driver, as the provisioner would, and its
	// PV and PVC bound by the PV binder.
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	vol, err := csi.NewControllerClient(conn).CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:               "pvc-source",
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 16 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}, AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	const class = "csi-block"
	block := corev1.PersistentVolumeBlock
	if _, err := kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-source"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(vol.Volume.CapacityBytes, resource.BinarySI)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			VolumeMode:                    &block,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: testdriver.DefaultName, VolumeHandle: vol.Volume.VolumeId,
			}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "source"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: new(class),
			VolumeMode:       &block,
			VolumeName:       "pv-source",
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "PVC source bound", func() (bool, string) {
		pvc, err := kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "source", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return pvc.Status.Phase == corev1.ClaimBound, string(pvc.Status.Phase)
	})

	if _, err := snaps.SnapshotV1().VolumeSnapshotClasses().Create(ctx, &snapv1.VolumeSnapshotClass{
		ObjectMeta:     metav1.ObjectMeta{Name: "test-snapshots"},
		Driver:         testdriver.DefaultName,
		DeletionPolicy: snapv1.VolumeSnapshotContentDelete,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := snaps.SnapshotV1().VolumeSnapshots(ns).Create(ctx, &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: "dynamic"},
		Spec: snapv1.VolumeSnapshotSpec{
			Source:                  snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: new("source")},
			VolumeSnapshotClassName: new("test-snapshots"),
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var handle string
	waitFor(t, 2*time.Minute, "VolumeSnapshot dynamic ready", func() (bool, string) {
		vs, err := snaps.SnapshotV1().VolumeSnapshots(ns).Get(ctx, "dynamic", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil {
			return false, "not bound"
		}
		content, err := snaps.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if content.Status != nil && content.Status.SnapshotHandle != nil {
			handle = *content.Status.SnapshotHandle
		}
		ready := vs.Status.ReadyToUse != nil && *vs.Status.ReadyToUse
		return ready && handle != "", fmt.Sprintf("readyToUse %v, error %v, handle %q", vs.Status.ReadyToUse, vs.Status.Error, handle)
	})
	snapshots := csi.NewControllerClient(conn)
	list, err := snapshots.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: handle})
	if err != nil || len(list.Entries) != 1 || list.Entries[0].Snapshot.SourceVolumeId != vol.Volume.VolumeId {
		t.Fatalf("the driver's snapshot %q: %v %v", handle, list, err)
	}

	// Deleting the VolumeSnapshot (deletionPolicy Delete) deletes the
	// driver's snapshot.
	if err := snaps.SnapshotV1().VolumeSnapshots(ns).Delete(ctx, "dynamic", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the driver's snapshot deleted", func() (bool, string) {
		list, err := snapshots.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: handle})
		if err != nil {
			return false, err.Error()
		}
		return len(list.Entries) == 0, fmt.Sprintf("%d entries", len(list.Entries))
	})
}
