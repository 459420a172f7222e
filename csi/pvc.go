package csi

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// pvcSpec is a PVC an operation creates.
type pvcSpec struct {
	name         string
	storageClass string
	size         resource.Quantity
	mode         corev1.PersistentVolumeMode
	dataSource   string // VolumeSnapshot to restore, or none
	labels       map[string]string
	annotations  map[string]string                   // added to the PVC's
	accessModes  []corev1.PersistentVolumeAccessMode // default ReadWriteOnce
}

// ensurePVC creates the PVC, or finds the one an earlier run of op
// created. A PVC of that name that op did not create is an ErrConflict:
// an operation never writes over a volume it does not own.
func (c *Clients) ensurePVC(ctx context.Context, ns, op, role string, s pvcSpec) (*corev1.PersistentVolumeClaim, bool, error) {
	meta := objectMeta(ns, op, role, s.labels)
	meta.Name = s.name
	for k, v := range s.annotations {
		meta.Annotations[k] = v
	}
	modes := s.accessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: meta,
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: modes,
			VolumeMode:  &s.mode,
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: s.size}},
		},
	}
	if s.storageClass != "" {
		pvc.Spec.StorageClassName = &s.storageClass
	}
	if s.dataSource != "" {
		group := "snapshot.storage.k8s.io"
		pvc.Spec.DataSource = &corev1.TypedLocalObjectReference{APIGroup: &group, Kind: "VolumeSnapshot", Name: s.dataSource}
		pvc.Spec.DataSourceRef = &corev1.TypedObjectReference{APIGroup: &group, Kind: "VolumeSnapshot", Name: s.dataSource}
	}
	cl := c.Kube.CoreV1().PersistentVolumeClaims(ns)
	got, created, err := createOrGet(ctx, "PVC", op, pvc, cl.Create, cl.Get)
	if err != nil {
		return nil, false, err
	}
	if got.Spec.VolumeMode == nil || *got.Spec.VolumeMode != s.mode {
		return nil, false, fmt.Errorf("PVC %s/%s: %w (volume mode is not %s)", ns, got.Name, ErrConflict, s.mode)
	}
	return got, created, nil
}

// bindingMode returns the volume binding mode of a storage class
// (Immediate when unknown).
func (c *Clients) bindingMode(ctx context.Context, class string) (storagev1.VolumeBindingMode, string, error) {
	if class == "" {
		return storagev1.VolumeBindingImmediate, "", nil
	}
	sc, err := c.Kube.StorageV1().StorageClasses().Get(ctx, class, metav1.GetOptions{})
	if err != nil {
		return "", "", fmt.Errorf("StorageClass %s: %w", class, explain(err))
	}
	mode := storagev1.VolumeBindingImmediate
	if sc.VolumeBindingMode != nil {
		mode = *sc.VolumeBindingMode
	}
	return mode, sc.Provisioner, nil
}

// waitBound waits until the PVC is Bound.
func (c *Clients) waitBound(ctx context.Context, ns, name string, interval, timeout time.Duration) error {
	return poll(ctx, interval, timeout, fmt.Sprintf("PVC %s/%s not bound", ns, name), func(ctx context.Context) (bool, string, error) {
		pvc, err := c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("PVC %s/%s: %w", ns, name, explain(err))
		}
		return pvc.Status.Phase == corev1.ClaimBound, "phase " + string(pvc.Status.Phase), nil
	})
}

// Cleanup deletes every object of the operation that this package created:
// the mover Job (with its pods), the clone or staging PVC and the
// VolumeSnapshot. Objects it did not create (a VolumeSnapshot the caller
// named, the target PVC of an import) are left alone. Missing objects are
// fine, so Cleanup can be called any number of times.
func (c *Clients) Cleanup(ctx context.Context, ns, op string) error {
	return c.cleanup(ctx, ns, op, false)
}

// cleanup is Cleanup, leaving the VolumeSnapshot when keepSnapshot.
func (c *Clients) cleanup(ctx context.Context, ns, op string, keepSnapshot bool) error {
	if err := ValidateOperation(op); err != nil {
		return err
	}
	name := ObjectName(op)
	bg := metav1.DeletePropagationBackground
	var errs []error
	del := func(kind string, get func() (metav1.Object, error), remove func() error) {
		obj, err := get()
		if apierrors.IsNotFound(err) {
			return
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s/%s: %w", kind, ns, name, explain(err)))
			return
		}
		l := obj.GetLabels()
		if l[LabelOperation] != op || l[LabelRole] == RoleTarget {
			return
		}
		if err := remove(); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s %s/%s: %w", kind, ns, name, explain(err)))
		}
	}
	// The clone first, the snapshot next, the Job (which holds the
	// result) last, so that a crash in between leaves what a rerun needs.
	pvcs := c.Kube.CoreV1().PersistentVolumeClaims(ns)
	del("PVC", func() (metav1.Object, error) { return pvcs.Get(ctx, name, metav1.GetOptions{}) },
		func() error { return pvcs.Delete(ctx, name, metav1.DeleteOptions{}) })
	vss := c.Snapshot.SnapshotV1().VolumeSnapshots(ns)
	if !keepSnapshot {
		del("VolumeSnapshot", func() (metav1.Object, error) { return vss.Get(ctx, name, metav1.GetOptions{}) },
			func() error { return vss.Delete(ctx, name, metav1.DeleteOptions{}) })
	}
	jobs := c.Kube.BatchV1().Jobs(ns)
	del("Job", func() (metav1.Object, error) { return jobs.Get(ctx, name, metav1.GetOptions{}) },
		func() error { return jobs.Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}) })
	if len(errs) > 0 {
		return fmt.Errorf("cleanup of operation %s: %w", op, errors.Join(errs...))
	}
	return nil
}
