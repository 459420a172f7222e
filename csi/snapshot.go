package csi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// volumeInfo is what an operation needs to know about a bound PVC.
type volumeInfo struct {
	pvc    *corev1.PersistentVolumeClaim
	driver string // CSI driver of its PersistentVolume
	mode   corev1.PersistentVolumeMode
	// nodeAffinity is the PV's required node affinity: where node-local
	// storage (hostpath, TopoLVM, OpenEBS LVM) keeps the volume and so
	// its snapshots and clones. Nil for storage reachable from any node.
	nodeAffinity *corev1.NodeSelector
}

// inspectPVC returns the PVC, its CSI driver and volume mode. The PVC must
// be bound to a CSI volume.
func (c *Clients) inspectPVC(ctx context.Context, ns, name string) (*volumeInfo, error) {
	pvc, err := c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("PVC %s/%s: %w", ns, name, explain(err))
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return nil, fmt.Errorf("PVC %s/%s is %s, not Bound: only a bound volume can be snapshotted", ns, name, pvc.Status.Phase)
	}
	pv, err := c.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("PersistentVolume %s of PVC %s/%s: %w", pvc.Spec.VolumeName, ns, name, explain(err))
	}
	if pv.Spec.CSI == nil {
		return nil, fmt.Errorf("PVC %s/%s: volume %s is not a CSI volume; VolumeSnapshots need a CSI driver", ns, name, pv.Name)
	}
	mode := corev1.PersistentVolumeFilesystem
	if pvc.Spec.VolumeMode != nil {
		mode = *pvc.Spec.VolumeMode
	}
	info := &volumeInfo{pvc: pvc, driver: pv.Spec.CSI.Driver, mode: mode}
	if pv.Spec.NodeAffinity != nil {
		info.nodeAffinity = pv.Spec.NodeAffinity.Required
	}
	return info, nil
}

// FindSnapshotClass returns the VolumeSnapshotClass to use for driver: the
// one marked default for it, or the only one it has.
func (c *Clients) FindSnapshotClass(ctx context.Context, driver string) (string, error) {
	list, err := c.Snapshot.SnapshotV1().VolumeSnapshotClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("listing VolumeSnapshotClasses: %w", explain(err))
	}
	var all, defaults []string
	for _, vc := range list.Items {
		if vc.Driver != driver {
			continue
		}
		all = append(all, vc.Name)
		if vc.Annotations[AnnotationDefaultSnapshotClass] == "true" {
			defaults = append(defaults, vc.Name)
		}
	}
	sort.Strings(all)
	sort.Strings(defaults)
	switch {
	case len(defaults) == 1:
		return defaults[0], nil
	case len(defaults) > 1:
		return "", fmt.Errorf("%d VolumeSnapshotClasses are marked default for driver %s (%s): name one", len(defaults), driver, strings.Join(defaults, ", "))
	case len(all) == 1:
		return all[0], nil
	case len(all) == 0:
		return "", fmt.Errorf("no VolumeSnapshotClass for driver %s: create one (or name a class)", driver)
	}
	return "", fmt.Errorf("%d VolumeSnapshotClasses for driver %s (%s) and none is marked %s: name one", len(all), driver, strings.Join(all, ", "), AnnotationDefaultSnapshotClass)
}

// ensureSnapshot creates the operation's VolumeSnapshot of pvc, or finds
// the one an earlier run created.
func (c *Clients) ensureSnapshot(ctx context.Context, ns, op, pvc, class string, labels map[string]string) (*snapv1.VolumeSnapshot, bool, error) {
	vs := &snapv1.VolumeSnapshot{
		ObjectMeta: objectMeta(ns, op, RoleSnapshot, labels),
		Spec: snapv1.VolumeSnapshotSpec{
			Source:                  snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvc},
			VolumeSnapshotClassName: &class,
		},
	}
	cl := c.Snapshot.SnapshotV1().VolumeSnapshots(ns)
	got, created, err := createOrGet(ctx, "VolumeSnapshot", op, vs, cl.Create, cl.Get)
	if err != nil {
		return nil, false, err
	}
	if src := got.Spec.Source.PersistentVolumeClaimName; src == nil || *src != pvc {
		return nil, false, fmt.Errorf("VolumeSnapshot %s/%s: %w (it snapshots another PVC)", ns, got.Name, ErrConflict)
	}
	return got, created, nil
}

// SnapshotError is returned when a VolumeSnapshot did not become ready in
// time and the snapshot controller or the CSI driver reported an error for
// it (status.error); it wraps ErrTimeout.
type SnapshotError struct {
	Namespace, Name string
	Message         string
	Err             error // the timeout
}

func (e *SnapshotError) Error() string {
	return fmt.Sprintf("VolumeSnapshot %s/%s failed: %s (%v)", e.Namespace, e.Name, e.Message, e.Err)
}

func (e *SnapshotError) Unwrap() error { return e.Err }

// WaitSnapshotReady waits until the VolumeSnapshot is readyToUse and
// returns it. A status.error does not end the wait: the snapshot
// controller copies transient errors of the driver (a DeadlineExceeded,
// say) onto the VolumeSnapshot and clears them once a retry succeeds, as
// Velero (velero-plugin-for-csi #197) and Kanister treat them. A snapshot
// still not ready after timeout gives an error wrapping ErrTimeout that
// tells how far it got: a *SnapshotError with the last error reported.
// Transient API errors (IsTransient) are retried with backoff until the
// timeout, as in WaitJob; any other API error ends the wait at once.
func (c *Clients) WaitSnapshotReady(ctx context.Context, ns, name string, interval, timeout time.Duration) (*snapv1.VolumeSnapshot, error) {
	var vs *snapv1.VolumeSnapshot
	lastErr := ""
	what := fmt.Sprintf("VolumeSnapshot %s/%s not ready", ns, name)
	look := func(ctx context.Context) (bool, string, error) {
		var err error
		vs, err = c.Snapshot.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("VolumeSnapshot %s/%s: %w", ns, name, explain(err))
		}
		st := vs.Status
		if st == nil {
			return false, "no status yet: is the snapshot controller running?", nil
		}
		if st.Error != nil && st.Error.Message != nil && *st.Error.Message != "" {
			// Transient until the timeout: the controller retries. An
			// error left on a ready snapshot is stale.
			if st.ReadyToUse == nil || !*st.ReadyToUse {
				lastErr = *st.Error.Message
				return false, "error, retried by the snapshot controller: " + lastErr, nil
			}
		}
		if st.ReadyToUse != nil && *st.ReadyToUse {
			if st.BoundVolumeSnapshotContentName == nil {
				return false, "ready but not bound to a VolumeSnapshotContent", nil
			}
			return true, "", nil
		}
		if st.BoundVolumeSnapshotContentName == nil {
			return false, "not bound to a VolumeSnapshotContent yet", nil
		}
		return false, "bound to " + *st.BoundVolumeSnapshotContentName + ", readyToUse=false", nil
	}
	if from := c.snapshotTimeoutFrom; from != nil { // tests
		if err := poll(ctx, interval, 0, what, func(ctx context.Context) (bool, string, error) {
			done, state, err := look(ctx)
			return done || err == nil && from(vs), state, err
		}); err != nil {
			return nil, err
		}
	}
	err := poll(ctx, interval, timeout, what, look)
	if errors.Is(err, ErrTimeout) && lastErr != "" {
		return nil, &SnapshotError{Namespace: ns, Name: name, Message: lastErr, Err: err}
	}
	if err != nil {
		return nil, err
	}
	return vs, nil
}

// restoreSize is the size a volume restored from vs needs: its
// restoreSize, or fallback when the driver reported none.
func restoreSize(vs *snapv1.VolumeSnapshot, fallback resource.Quantity) resource.Quantity {
	if vs.Status != nil && vs.Status.RestoreSize != nil && !vs.Status.RestoreSize.IsZero() {
		return *vs.Status.RestoreSize
	}
	return fallback
}

// ErrVolumeModeChange is wrapped when a snapshot must be restored in
// another volume mode and the VolumeSnapshotContent lacks the annotation
// that allows it.
var ErrVolumeModeChange = errors.New("volume mode change not allowed")

// allowVolumeModeChange makes sure the VolumeSnapshotContent bound to vs
// carries AnnotationAllowVolumeModeChange, setting it when allowed.
func (c *Clients) allowVolumeModeChange(ctx context.Context, vs *snapv1.VolumeSnapshot, from, to corev1.PersistentVolumeMode, allowed bool) error {
	content := *vs.Status.BoundVolumeSnapshotContentName
	vsc, err := c.Snapshot.SnapshotV1().VolumeSnapshotContents().Get(ctx, content, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("VolumeSnapshotContent %s of VolumeSnapshot %s/%s: %w", content, vs.Namespace, vs.Name, explain(err))
	}
	if vsc.Annotations[AnnotationAllowVolumeModeChange] == "true" {
		return nil
	}
	need := fmt.Sprintf("restoring VolumeSnapshot %s/%s (volume mode %s) as a %s-mode PVC needs the annotation %s: \"true\" on its VolumeSnapshotContent %s (KEP-3141)",
		vs.Namespace, vs.Name, from, to, AnnotationAllowVolumeModeChange, content)
	if !allowed {
		return fmt.Errorf("%w: %s; allow this operation to set it (AllowVolumeModeChange, mover k8s --allow-volume-mode-change) or have a cluster admin set it", ErrVolumeModeChange, need)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationAllowVolumeModeChange: "true"}}})
	_, err = c.Snapshot.SnapshotV1().VolumeSnapshotContents().Patch(ctx, content, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%w: %s, and setting it was denied: the ServiceAccount needs the verb \"patch\" on volumesnapshotcontents.snapshot.storage.k8s.io (cluster-scoped; ClusterRole blockmover-volume-mode-change in deploy/rbac.yaml): %w",
			ErrVolumeModeChange, need, explain(err))
	}
	if err != nil {
		return fmt.Errorf("annotating VolumeSnapshotContent %s: %w", content, err)
	}
	return nil
}
