package velero

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/blockmover/blockmover/csi"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// Annotations the rebind uses.
const (
	// AnnotationReclaimPolicy on a restored PV keeps its reclaim policy
	// while the rebind holds it at Retain, so a rerun restores it.
	AnnotationReclaimPolicy = "blockmover.io/reclaim-policy"
	annBoundByController    = "pv.kubernetes.io/bound-by-controller"
	annBindCompleted        = "pv.kubernetes.io/bind-completed"
)

// restoredPV returns the PV an earlier run of op filled and retained
// (labelled with op), or nil.
func (c *Controller) restoredPV(ctx context.Context, op string) (*corev1.PersistentVolume, error) {
	pvs, err := c.clients.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{csi.LabelOperation: op}).String()})
	if err != nil {
		return nil, fmt.Errorf("listing the PVs of operation %s: %w", op, err)
	}
	if len(pvs.Items) == 0 {
		return nil, nil
	}
	return &pvs.Items[0], nil
}

// rebind hands the volume of the filled restore PVC name to target, as Velero's
// own mover does (exposer.RebindVolume): the PV is retained (its reclaim
// policy kept in AnnotationReclaimPolicy, and labelled with op), the
// restore PVC deleted, then handOver.
func (c *Controller) rebind(ctx context.Context, op, name string, target *corev1.PersistentVolumeClaim, tm csi.Timing) error {
	ns := c.cfg.Namespace
	pvcs := c.clients.Kube.CoreV1().PersistentVolumeClaims(ns)
	var pvName string
	if err := c.wait(ctx, tm, "restore PVC "+ns+"/"+name+" bound", func() (bool, error) {
		pvc, err := pvcs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pvName = pvc.Spec.VolumeName
		return pvc.Status.Phase == corev1.ClaimBound && pvName != "", nil
	}); err != nil {
		return err
	}
	pv, err := c.clients.Kube.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("PV %s of restore PVC %s/%s: %w", pvName, ns, name, err)
	}
	policy := pv.Spec.PersistentVolumeReclaimPolicy
	if v := pv.Annotations[AnnotationReclaimPolicy]; v != "" {
		policy = corev1.PersistentVolumeReclaimPolicy(v)
	}
	if pv, err = c.patchPV(ctx, pvName, map[string]any{
		"metadata": map[string]any{"labels": map[string]string{csi.LabelOperation: op},
			"annotations": map[string]string{AnnotationReclaimPolicy: string(policy)}},
		"spec": map[string]any{"persistentVolumeReclaimPolicy": corev1.PersistentVolumeReclaimRetain},
	}); err != nil {
		return err
	}
	if err := pvcs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting restore PVC %s/%s: %w", ns, name, err)
	}
	if err := c.wait(ctx, tm, "restore PVC "+ns+"/"+name+" deleted", func() (bool, error) {
		_, err := pvcs.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	}); err != nil {
		return err
	}
	return c.handOver(ctx, op, pv, target, tm)
}

// handOver binds the retained PV pv to target: the PVC's spec.volumeName,
// the PV's claimRef (no UID: the PV binder completes it), the PVC
// selector's match labels (velero.io/dynamic-pv-restore among them) on the
// PV; then it waits for both to be Bound and restores the reclaim policy.
func (c *Controller) handOver(ctx context.Context, op string, pv *corev1.PersistentVolume, target *corev1.PersistentVolumeClaim, tm csi.Timing) error {
	pvcs := c.clients.Kube.CoreV1().PersistentVolumeClaims(target.Namespace)
	switch target.Spec.VolumeName {
	case pv.Name:
	case "":
		patch, _ := json.Marshal(map[string]any{
			"metadata": map[string]any{"annotations": map[string]any{annBindCompleted: nil, annBoundByController: nil}},
			"spec":     map[string]any{"volumeName": pv.Name},
		})
		if _, err := pvcs.Patch(ctx, target.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("binding target PVC %s/%s to PV %s: %w", target.Namespace, target.Name, pv.Name, err)
		}
	default:
		return fmt.Errorf("target PVC %s/%s is bound to PV %s, not to the restored PV %s; Velero leaves a data mover's target PVC unbound — was it restored twice?", target.Namespace, target.Name, target.Spec.VolumeName, pv.Name)
	}
	lbl := map[string]string{}
	if target.Spec.Selector != nil {
		for k, v := range target.Spec.Selector.MatchLabels {
			if _, ok := pv.Labels[k]; !ok {
				lbl[k] = v
			}
		}
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != target.Namespace || ref.Name != target.Name {
		var err error
		if pv, err = c.patchPV(ctx, pv.Name, map[string]any{
			"metadata": map[string]any{"labels": lbl, "annotations": map[string]any{annBoundByController: nil}},
			"spec": map[string]any{"claimRef": map[string]any{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
				"namespace": target.Namespace, "name": target.Name, "uid": nil, "resourceVersion": nil, "fieldPath": nil}},
		}); err != nil {
			return err
		}
	}
	if err := c.wait(ctx, tm, fmt.Sprintf("PV %s bound to PVC %s/%s", pv.Name, target.Namespace, target.Name), func() (bool, error) {
		got, err := c.clients.Kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		claim, err := pvcs.Get(ctx, target.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pv = got
		return got.Status.Phase == corev1.VolumeBound && got.Spec.ClaimRef != nil && got.Spec.ClaimRef.UID == claim.UID &&
			claim.Status.Phase == corev1.ClaimBound, nil
	}); err != nil {
		return err
	}
	policy := pv.Annotations[AnnotationReclaimPolicy]
	if policy == "" {
		policy = string(corev1.PersistentVolumeReclaimDelete)
	}
	_, err := c.patchPV(ctx, pv.Name, map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{AnnotationReclaimPolicy: nil}},
		"spec":     map[string]any{"persistentVolumeReclaimPolicy": policy},
	})
	return err
}

func (c *Controller) patchPV(ctx context.Context, name string, patch map[string]any) (*corev1.PersistentVolume, error) {
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, err
	}
	pv, err := c.clients.Kube.CoreV1().PersistentVolumes().Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("patching PV %s: %w", name, err)
	}
	return pv, nil
}

// wait polls cond until it holds, fails, or tm.Bind (default 10m) passes.
func (c *Controller) wait(ctx context.Context, tm csi.Timing, what string, cond func() (bool, error)) error {
	timeout := tm.Bind
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w after %s", what, csi.ErrTimeout, timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(pollEvery(tm)):
		}
	}
}
