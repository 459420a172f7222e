package velero

import (
	"context"
	"fmt"
	"time"

	"github.com/blockmover/blockmover/csi"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// AnnotationTakenFrom on the controller's VolumeSnapshot names the
// VolumeSnapshot and VolumeSnapshotContent it was taken over from.
const (
	AnnotationTakenFromSnapshot = "blockmover.io/taken-from-snapshot"
	AnnotationTakenFromContent  = "blockmover.io/taken-from-content"
	// labelSnapshotManagedBy is kept on a copied content for the
	// csi-snapshotter's distributed snapshotting.
	labelSnapshotManagedBy = "snapshot.storage.kubernetes.io/managed-by"
)

// takeOver moves the DataUpload's VolumeSnapshot into the controller's
// namespace, as Velero's own mover does, and returns the name of the
// VolumeSnapshot there (csi.ObjectName(op), labelled with op so that the
// operation's cleanup deletes it, and with it the driver's snapshot).
// Steps, each safe to repeat after a crash: wait for the original to be
// ready; create a pre-provisioned content with the same snapshot handle
// (deletionPolicy Delete) and the VolumeSnapshot bound to it; set the
// original content to Retain; delete the original VolumeSnapshot and
// content (the driver's snapshot stays, owned by the new pair).
func (c *Controller) takeOver(ctx context.Context, du *velerov2.DataUpload, op string) (string, error) {
	snaps := c.clients.Snapshot.SnapshotV1()
	ns, name := c.cfg.Namespace, csi.ObjectName(op)
	srcNS, srcName := du.Spec.SourceNamespace, du.Spec.CSISnapshot.VolumeSnapshot
	ours, err := snaps.VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if ours, err = c.copySnapshot(ctx, du, op); err != nil {
			return "", err
		}
	case err != nil:
		return "", fmt.Errorf("VolumeSnapshot %s/%s: %w", ns, name, err)
	case ours.Labels[csi.LabelOperation] != op:
		return "", fmt.Errorf("VolumeSnapshot %s/%s exists and belongs to another operation: %w", ns, name, csi.ErrConflict)
	}
	content := ours.Annotations[AnnotationTakenFromContent]
	if err := c.release(ctx, srcNS, srcName, content); err != nil {
		return "", err
	}
	return name, nil
}

// copySnapshot creates the controller's VolumeSnapshot and content for the
// DataUpload's VolumeSnapshot, once that is ready.
func (c *Controller) copySnapshot(ctx context.Context, du *velerov2.DataUpload, op string) (*snapv1.VolumeSnapshot, error) {
	snaps := c.clients.Snapshot.SnapshotV1()
	ns, name := c.cfg.Namespace, csi.ObjectName(op)
	srcNS, srcName := du.Spec.SourceNamespace, du.Spec.CSISnapshot.VolumeSnapshot
	tm := c.timing(du.Spec.OperationTimeout)
	if tm.Snapshot <= 0 {
		tm.Snapshot = 10 * time.Minute
	}
	src, err := c.clients.WaitSnapshotReady(ctx, srcNS, srcName, tm.Poll, tm.Snapshot)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("VolumeSnapshot %s/%s of DataUpload %s is gone before blockmover took it over; run the backup again", srcNS, srcName, du.Name)
	}
	if err != nil {
		return nil, err
	}
	srcContent, err := snaps.VolumeSnapshotContents().Get(ctx, *src.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("VolumeSnapshotContent of VolumeSnapshot %s/%s: %w", srcNS, srcName, err)
	}
	if srcContent.Status == nil || srcContent.Status.SnapshotHandle == nil {
		return nil, fmt.Errorf("VolumeSnapshotContent %s has no snapshot handle", srcContent.Name)
	}
	labels := map[string]string{csi.LabelManagedBy: csi.ManagedBy, csi.LabelOperation: op, csi.LabelRole: csi.RoleSnapshot}
	vs := &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: map[string]string{
			csi.AnnotationCreated:       "true",
			AnnotationTakenFromSnapshot: srcNS + "/" + srcName,
			AnnotationTakenFromContent:  srcContent.Name,
		}},
		Spec: snapv1.VolumeSnapshotSpec{
			Source:                  snapv1.VolumeSnapshotSource{VolumeSnapshotContentName: &name},
			VolumeSnapshotClassName: src.Spec.VolumeSnapshotClassName,
		},
	}
	vs, err = snaps.VolumeSnapshots(ns).Create(ctx, vs, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating VolumeSnapshot %s/%s: %w", ns, name, err)
	}
	cl := map[string]string{csi.LabelManagedBy: csi.ManagedBy, csi.LabelOperation: op}
	if m, ok := srcContent.Labels[labelSnapshotManagedBy]; ok {
		cl[labelSnapshotManagedBy] = m
	}
	content := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: cl, Annotations: map[string]string{
			csi.AnnotationAllowVolumeModeChange: "true"}},
		Spec: snapv1.VolumeSnapshotContentSpec{
			VolumeSnapshotRef:       corev1ObjectReference(ns, name, vs.UID),
			Source:                  snapv1.VolumeSnapshotContentSource{SnapshotHandle: srcContent.Status.SnapshotHandle},
			DeletionPolicy:          snapv1.VolumeSnapshotContentDelete,
			Driver:                  srcContent.Spec.Driver,
			VolumeSnapshotClassName: srcContent.Spec.VolumeSnapshotClassName,
		},
	}
	if _, err := snaps.VolumeSnapshotContents().Create(ctx, content, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating VolumeSnapshotContent %s: %w", name, err)
	}
	c.cfg.Log.Info("took over the VolumeSnapshot", "from", srcNS+"/"+srcName, "content", srcContent.Name, "to", ns+"/"+name)
	return vs, nil
}

// release sets the original content to Retain and deletes the original
// VolumeSnapshot and content; any of them may be gone already.
func (c *Controller) release(ctx context.Context, srcNS, srcName, content string) error {
	snaps := c.clients.Snapshot.SnapshotV1()
	if content != "" {
		patch := []byte(`{"spec":{"deletionPolicy":"Retain"}}`)
		_, err := snaps.VolumeSnapshotContents().Patch(ctx, content, types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("retaining VolumeSnapshotContent %s: %w", content, err)
		}
	}
	if err := snaps.VolumeSnapshots(srcNS).Delete(ctx, srcName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting VolumeSnapshot %s/%s after taking it over: %w", srcNS, srcName, err)
	}
	if content == "" {
		return nil
	}
	// The content goes once the snapshot controller has let go of it
	// (its finalizers): delete it now, and again until it is gone.
	for {
		err := snaps.VolumeSnapshotContents().Delete(ctx, content, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("deleting VolumeSnapshotContent %s after taking it over: %w", content, err)
		}
		if _, err := snaps.VolumeSnapshotContents().Get(ctx, content, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for VolumeSnapshotContent %s to go: %w", content, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
