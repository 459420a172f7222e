package velero

// Changed-block tracking across Velero backups.
//
// The CSI SnapshotMetadata service lists the blocks that changed between
// two snapshots of one volume (GetMetadataDelta): the new one, and a base
// given by its CSI snapshot handle, which the driver must still hold. So,
// as velero-block's design does, a completed backup of a PVC keeps its
// taken-over VolumeSnapshot (and through its content, deletionPolicy
// Delete, the driver's snapshot) when the driver serves SnapshotMetadata,
// and records the handle in status.dataMoverResult. The PVC's next backup
// exports with that backup's snapshot as --base and asks for the delta
// between the two; it falls back to reading the whole volume (which still
// deduplicates) when anything about the delta fails.
//
// A kept VolumeSnapshot is deleted (collectBases) once its DataUpload is
// no longer the newest Completed one of its PVC — the next backup has
// used it — or once the DataUpload is gone: Velero deletes a deleted
// backup's DataUploads. At most one driver snapshot per backed-up PVC
// stays.

import (
	"context"
	"log/slog"
	"time"

	"github.com/blockmover/blockmover/csi"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// servesChangedBlocks reports whether du's driver serves SnapshotMetadata
// to the mover pods (a ServiceAccount is configured for them).
func (c *Controller) servesChangedBlocks(ctx context.Context, du *velerov2.DataUpload, log *slog.Logger) bool {
	if c.cfg.ServiceAccount == "" || du.Spec.CSISnapshot == nil || du.Spec.CSISnapshot.Driver == "" {
		return false
	}
	if _, err := c.clients.FindSnapshotMetadataService(ctx, du.Spec.CSISnapshot.Driver); err != nil {
		log.Debug("no changed-block tracking", "driver", du.Spec.CSISnapshot.Driver, "error", err)
		return false
	}
	return true
}

// changedBlocks returns what du's export needs to read only the blocks
// changed since prev, du's base: prev's kept snapshot handle, when the
// VolumeSnapshot that holds it is still there and the driver serves
// SnapshotMetadata; else nil (the whole volume is read).
func (c *Controller) changedBlocks(ctx context.Context, du, prev *velerov2.DataUpload, log *slog.Logger) *csi.ChangedBlocks {
	if prev.Status.DataMoverResult == nil {
		return nil
	}
	handle := (*prev.Status.DataMoverResult)[resultSnapshotHandle]
	if handle == "" || !c.servesChangedBlocks(ctx, du, log) {
		return nil
	}
	name := csi.ObjectName(OperationID("du", string(prev.UID)))
	vs, err := c.clients.Snapshot.SnapshotV1().VolumeSnapshots(c.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil || vs.DeletionTimestamp != nil {
		log.Info("the base's VolumeSnapshot is gone: reading the whole volume", "base", prev.Name, "error", err)
		return nil
	}
	log.Info("changed blocks since the base", "base", prev.Name, "handle", handle)
	return &csi.ChangedBlocks{BaseSnapshotHandle: handle}
}

// collectBases deletes the kept VolumeSnapshots (and the driver's
// snapshots) no DataUpload needs any more: each whose DataUpload is gone,
// or ended and is not the newest Completed one of its PVC. uploads is
// every DataUpload in Velero's namespace.
func (c *Controller) collectBases(ctx context.Context, uploads []*velerov2.DataUpload) {
	list, err := c.clients.Snapshot.SnapshotV1().VolumeSnapshots(c.cfg.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{csi.LabelManagedBy: csi.ManagedBy, csi.LabelRole: csi.RoleSnapshot}).String()})
	if err != nil {
		c.cfg.Log.Warn("listing the kept VolumeSnapshots", "error", err)
		return
	}
	byOp := map[string]*velerov2.DataUpload{}
	newest := map[string]*velerov2.DataUpload{} // PVC UID → its newest Completed DataUpload of ours
	for _, d := range uploads {
		byOp[OperationID("du", string(d.UID))] = d
		if pvc := d.Labels[LabelPVCUID]; pvc != "" && c.completedUpload(d) && (newest[pvc] == nil || newerUpload(d, newest[pvc])) {
			newest[pvc] = d
		}
	}
	for _, vs := range list.Items {
		op := vs.Labels[csi.LabelOperation]
		if len(op) < 3 || op[:3] != "du-" || vs.DeletionTimestamp != nil {
			continue
		}
		d, ok := byOp[op]
		switch {
		case ok && !terminalUpload(d.Status.Phase):
			continue // in progress: its own
		case ok && d.Status.Phase == velerov2.DataUploadPhaseCompleted && newest[d.Labels[LabelPVCUID]] == d:
			continue // the base of its PVC's next backup
		case !ok && time.Since(vs.CreationTimestamp.Time) < c.cfg.Resync*3:
			continue // a DataUpload the cache does not show yet
		}
		if ok {
			if _, running := c.isRunning(d.UID); running {
				continue
			}
		}
		c.cfg.Log.Info("deleting a base VolumeSnapshot no backup needs", "volumesnapshot", vs.Name, "dataupload_present", ok)
		if err := c.clients.Cleanup(ctx, c.cfg.Namespace, op); err != nil {
			c.cfg.Log.Warn("deleting a base VolumeSnapshot", "volumesnapshot", vs.Name, "error", err)
		}
	}
}
