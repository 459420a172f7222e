package velero

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/blockmover/blockmover/csi"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func terminalDownload(p velerov2.DataDownloadPhase) bool {
	return p == velerov2.DataDownloadPhaseCompleted || p == velerov2.DataDownloadPhaseFailed || p == velerov2.DataDownloadPhaseCanceled
}

// reconcileDownload is reconcileUpload for a DataDownload.
func (c *Controller) reconcileDownload(ctx context.Context, dd *velerov2.DataDownload) {
	if dd.Spec.DataMover != c.cfg.Name || terminalDownload(dd.Status.Phase) {
		return
	}
	if op, ok := c.isRunning(dd.UID); ok {
		if dd.Spec.Cancel && !op.canceling {
			op.cancel()
		}
		return
	}
	if dd.Spec.Cancel || dd.Status.Phase == velerov2.DataDownloadPhaseCanceling {
		c.start(ctx, dd.UID, false, true, func(octx context.Context) { c.cancelDownload(octx, dd) })
		return
	}
	c.start(ctx, dd.UID, true, false, func(octx context.Context) { c.runDownload(ctx, octx, dd) })
}

// setDownload writes a DataDownload's status through mutate.
func (c *Controller) setDownload(ctx context.Context, dd *velerov2.DataDownload, mutate func(*velerov2.DataDownload) bool) bool {
	_, err := updateObject[velerov2.DataDownload](ctx, c.dyn, downloadsGVR(), dd.Namespace, dd.Name, func(d *velerov2.DataDownload) bool {
		if d.UID != dd.UID || terminalDownload(d.Status.Phase) {
			return false
		}
		return mutate(d)
	})
	if err != nil {
		c.cfg.Log.Warn("DataDownload status", "name", dd.Name, "error", err)
		return false
	}
	return true
}

func (c *Controller) endDownload(ctx context.Context, dd *velerov2.DataDownload, phase velerov2.DataDownloadPhase, msg string) {
	c.setDownload(ctx, dd, func(d *velerov2.DataDownload) bool {
		d.Status.Phase, d.Status.Message, d.Status.CompletionTimestamp = phase, msg, now()
		return true
	})
}

// cancelDownload deletes the operation's objects (the Job, the staging
// and restore PVCs; never the target PVC) and ends as Canceled.
func (c *Controller) cancelDownload(ctx context.Context, dd *velerov2.DataDownload) {
	c.setDownload(ctx, dd, func(d *velerov2.DataDownload) bool {
		if d.Status.Phase == velerov2.DataDownloadPhaseCanceling {
			return false
		}
		d.Status.Phase = velerov2.DataDownloadPhaseCanceling
		return true
	})
	if err := c.cleanupDownload(ctx, dd); err != nil {
		c.endDownload(ctx, dd, velerov2.DataDownloadPhaseFailed, oneLine(fmt.Errorf("canceled, but its objects could not all be deleted: %w", err)))
		return
	}
	c.endDownload(ctx, dd, velerov2.DataDownloadPhaseCanceled, "canceled")
}

// cleanupDownload deletes the operation's objects and its restore PVC
// (whose volume, if the rebind has not happened, goes with it).
func (c *Controller) cleanupDownload(ctx context.Context, dd *velerov2.DataDownload) error {
	op := OperationID("dd", string(dd.UID))
	if err := c.clients.Cleanup(ctx, c.cfg.Namespace, op); err != nil {
		return err
	}
	pvcs := c.clients.Kube.CoreV1().PersistentVolumeClaims(c.cfg.Namespace)
	name := restorePVCName(dd.UID)
	pvc, err := pvcs.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore PVC %s/%s: %w", c.cfg.Namespace, name, err)
	}
	if pvc.Labels[csi.LabelOperation] != op {
		return nil
	}
	if err := pvcs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting restore PVC %s/%s: %w", c.cfg.Namespace, name, err)
	}
	return nil
}

// restorePVCName is the PVC in Velero's namespace that an import fills
// before its volume is handed to the target PVC.
func restorePVCName(uid types.UID) string { return OperationID("restore", string(uid)) }

// runDownload drives one DataDownload to an outcome; see runUpload for
// ctrl and ctx.
func (c *Controller) runDownload(ctrl, ctx context.Context, dd *velerov2.DataDownload) {
	log := c.cfg.Log.With("datadownload", dd.Name)
	// The informer's copy may predate the outcome of an operation that
	// just ended here: only the API's copy says whether there is work.
	fresh, err := getObject[velerov2.DataDownload](ctx, c.dyn, downloadsGVR(), dd.Namespace, dd.Name)
	if err != nil || fresh.UID != dd.UID || terminalDownload(fresh.Status.Phase) {
		return
	}
	dd = fresh
	if dd.Status.Phase == "" || dd.Status.Phase == velerov2.DataDownloadPhaseNew {
		if !c.setDownload(ctx, dd, func(d *velerov2.DataDownload) bool {
			if d.Status.Phase != "" && d.Status.Phase != velerov2.DataDownloadPhaseNew {
				return false
			}
			d.Status.Phase = velerov2.DataDownloadPhaseAccepted
			d.Status.AcceptedByNode = c.cfg.Identity
			d.Status.AcceptedTimestamp = now()
			return true
		}) {
			return
		}
		log.Info("accepted")
	} else {
		log.Info("adopting", "phase", dd.Status.Phase)
	}
	size, err := c.restore(ctx, dd, log)
	switch {
	case err != nil && ctrl.Err() != nil:
		log.Info("stopped; the next leader adopts the operation", "error", err)
		return
	case err != nil && ctx.Err() != nil:
		log.Info("canceling")
		c.cancelDownload(ctrl, dd)
		return
	case err != nil:
		if cerr := c.cleanupDownload(ctx, dd); cerr != nil {
			log.Warn("cleanup after a failure", "error", cerr)
		}
		msg := oneLine(err)
		log.Info("DataDownload failed", "message", msg)
		c.endDownload(ctx, dd, velerov2.DataDownloadPhaseFailed, msg)
		return
	}
	c.setDownload(ctx, dd, func(d *velerov2.DataDownload) bool {
		d.Status.Phase, d.Status.Message = velerov2.DataDownloadPhaseCompleted, ""
		d.Status.Progress.TotalBytes, d.Status.Progress.BytesDone = size, size
		if d.Status.StartTimestamp == nil {
			d.Status.StartTimestamp = now()
		}
		d.Status.CompletionTimestamp = now()
		return true
	})
	log.Info("completed", "size", size)
}

// restore waits for the target PVC, imports the snapshot into a new
// volume of the target's class, mode, access modes and size, and hands
// that volume to the target PVC (rebind). It returns the bytes restored.
func (c *Controller) restore(ctx context.Context, dd *velerov2.DataDownload, log *slog.Logger) (int64, error) {
	if dd.Spec.SnapshotID == "" {
		return 0, fmt.Errorf("DataDownload %s has no spec.snapshotID", dd.Name)
	}
	repo, job, err := c.repository(ctx, dd.Spec.BackupStorageLocation)
	if err != nil {
		return 0, err
	}
	op := OperationID("dd", string(dd.UID))
	tm := c.timing(dd.Spec.OperationTimeout)
	target, err := c.waitTargetPVC(ctx, dd, tm)
	if err != nil {
		return 0, err
	}
	// A rerun after the rebind began: the volume is filled and retained.
	if pv, err := c.restoredPV(ctx, op); err != nil || pv != nil {
		if err != nil {
			return 0, err
		}
		return dd.Spec.SnapshotSize, c.handOver(ctx, op, pv, target, tm)
	}
	c.setDownload(ctx, dd, func(d *velerov2.DataDownload) bool {
		if d.Status.Phase != velerov2.DataDownloadPhaseAccepted {
			return false
		}
		d.Status.Phase = velerov2.DataDownloadPhasePrepared
		if d.Status.StartTimestamp == nil {
			d.Status.StartTimestamp = now() // the copy starts
		}
		return true
	})
	size := dd.Spec.SnapshotSize
	if q, ok := target.Spec.Resources.Requests[corev1.ResourceStorage]; ok && q.Value() > size {
		size = q.Value()
	}
	mode := corev1.PersistentVolumeFilesystem
	if target.Spec.VolumeMode != nil {
		mode = *target.Spec.VolumeMode
	}
	class := ""
	if target.Spec.StorageClassName != nil {
		class = *target.Spec.StorageClassName
	}
	stop := c.watchProgress(ctx, op, func(node string, p progress) {
		c.setDownload(ctx, dd, func(d *velerov2.DataDownload) bool {
			return applyProgress(&d.Status.Phase, &d.Status.StartTimestamp, &d.Status.Node, &d.Status.Progress.TotalBytes, &d.Status.Progress.BytesDone,
				velerov2.DataDownloadPhasePrepared, velerov2.DataDownloadPhaseInProgress, node, p)
		})
	})
	res, err := c.clients.Import(ctx, csi.ImportArgs{
		Namespace: c.cfg.Namespace, PVC: restorePVCName(dd.UID), Operation: op, Snapshot: dd.Spec.SnapshotID, Size: size,
		StorageClass: class, VolumeMode: mode, AccessModes: target.Spec.AccessModes, AllowVolumeModeChange: true,
		Job: job, Timing: tm, KeepOnFailure: true, Log: log,
	})
	stop()
	if err != nil {
		return 0, c.explain(err, dd.Spec.BackupStorageLocation, repo)
	}
	if res.Pending {
		return 0, fmt.Errorf("storage class %q binds volumes on first use, which a Filesystem-mode restore through blockmover cannot hand over yet; restore into a class with volumeBindingMode Immediate", class)
	}
	if err := c.rebind(ctx, op, restorePVCName(dd.UID), target, tm); err != nil {
		return 0, err
	}
	return res.Size, nil
}

// waitTargetPVC waits for the DataDownload's target PVC, which Velero's
// restore may create after the DataDownload.
func (c *Controller) waitTargetPVC(ctx context.Context, dd *velerov2.DataDownload, tm csi.Timing) (*corev1.PersistentVolumeClaim, error) {
	ns, name := dd.Spec.TargetVolume.Namespace, dd.Spec.TargetVolume.PVC
	if ns == "" || name == "" {
		return nil, fmt.Errorf("DataDownload %s has no spec.targetVolume.pvc and namespace", dd.Name)
	}
	timeout := tm.Bind
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		pvc, err := c.clients.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			return pvc, nil
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("target PVC %s/%s: %w", ns, name, err)
		case time.Now().After(deadline):
			return nil, fmt.Errorf("target PVC %s/%s did not appear within %s; is the Velero restore still running?", ns, name, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for target PVC %s/%s: %w", ns, name, ctx.Err())
		case <-time.After(pollEvery(tm)):
		}
	}
}

func pollEvery(tm csi.Timing) time.Duration {
	if tm.Poll > 0 {
		return tm.Poll
	}
	return 2 * time.Second
}
