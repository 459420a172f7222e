package velero

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/blockmover/blockmover/csi"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// OperationID is the csi operation of a DataUpload or DataDownload: its
// UID, so that every object of the operation has a name no other
// operation has, and a restarted controller finds them again.
func OperationID(prefix string, uid string) string { return prefix + "-" + strings.ToLower(uid) }

func terminalUpload(p velerov2.DataUploadPhase) bool {
	return p == velerov2.DataUploadPhaseCompleted || p == velerov2.DataUploadPhaseFailed || p == velerov2.DataUploadPhaseCanceled
}

// reconcileUpload decides what a DataUpload needs: nothing (another
// mover's, finished, or in progress here), a cancel, or an operation that
// starts (New) or adopts (Accepted, Prepared, InProgress after a restart)
// the csi export, when a slot is free.
func (c *Controller) reconcileUpload(ctx context.Context, du *velerov2.DataUpload) {
	if du.Spec.DataMover != c.cfg.Name || terminalUpload(du.Status.Phase) {
		return
	}
	if op, ok := c.isRunning(du.UID); ok {
		if du.Spec.Cancel && !op.canceling {
			op.cancel()
		}
		return
	}
	if du.Spec.Cancel || du.Status.Phase == velerov2.DataUploadPhaseCanceling {
		c.start(ctx, du.UID, false, true, func(octx context.Context) { c.cancelUpload(octx, du) })
		return
	}
	c.start(ctx, du.UID, true, false, func(octx context.Context) { c.runUpload(ctx, octx, du) })
}

// setUpload writes a DataUpload's status through mutate; it logs and
// reports false when that failed (the object is gone, or the API).
func (c *Controller) setUpload(ctx context.Context, du *velerov2.DataUpload, mutate func(*velerov2.DataUpload) bool) bool {
	_, err := updateObject[velerov2.DataUpload](ctx, c.dyn, uploadsGVR(), du.Namespace, du.Name, func(d *velerov2.DataUpload) bool {
		if d.UID != du.UID || terminalUpload(d.Status.Phase) {
			return false
		}
		return mutate(d)
	})
	if err != nil {
		c.cfg.Log.Warn("DataUpload status", "name", du.Name, "error", err)
		return false
	}
	return true
}

// failUpload ends a DataUpload as Failed with err as its message.
func (c *Controller) failUpload(ctx context.Context, du *velerov2.DataUpload, err error) {
	msg := oneLine(err)
	c.cfg.Log.Info("DataUpload failed", "name", du.Name, "message", msg)
	c.setUpload(ctx, du, func(d *velerov2.DataUpload) bool {
		d.Status.Phase = velerov2.DataUploadPhaseFailed
		d.Status.Message = msg
		d.Status.CompletionTimestamp = now()
		return true
	})
}

// cancelUpload deletes what the operation made and ends the DataUpload as
// Canceled. The repository stays valid: an export's snapshot is written
// last, and packs it uploaded are reused or collected by gc.
func (c *Controller) cancelUpload(ctx context.Context, du *velerov2.DataUpload) {
	c.setUpload(ctx, du, func(d *velerov2.DataUpload) bool {
		if d.Status.Phase == velerov2.DataUploadPhaseCanceling {
			return false
		}
		d.Status.Phase = velerov2.DataUploadPhaseCanceling
		return true
	})
	op := OperationID("du", string(du.UID))
	if err := c.clients.Cleanup(ctx, c.cfg.Namespace, op); err != nil {
		c.failUpload(ctx, du, fmt.Errorf("canceled, but its objects could not all be deleted: %w", err))
		return
	}
	c.setUpload(ctx, du, func(d *velerov2.DataUpload) bool {
		d.Status.Phase = velerov2.DataUploadPhaseCanceled
		d.Status.Message = "canceled"
		d.Status.CompletionTimestamp = now()
		return true
	})
}

// runUpload drives one DataUpload to an outcome. ctrl is the controller's
// context, ctx the operation's: if ctrl ends (shutdown, lost leadership)
// everything is left for the next leader to adopt; if only ctx ends, the
// DataUpload was canceled.
func (c *Controller) runUpload(ctrl, ctx context.Context, du *velerov2.DataUpload) {
	log := c.cfg.Log.With("dataupload", du.Name)
	// The informer's copy may predate the outcome of an operation that
	// just ended here: only the API's copy says whether there is work.
	fresh, err := getObject[velerov2.DataUpload](ctx, c.dyn, uploadsGVR(), du.Namespace, du.Name)
	if err != nil || fresh.UID != du.UID || terminalUpload(fresh.Status.Phase) {
		return
	}
	du = fresh
	if du.Status.Phase == "" || du.Status.Phase == velerov2.DataUploadPhaseNew {
		if !c.setUpload(ctx, du, func(d *velerov2.DataUpload) bool {
			if d.Status.Phase != "" && d.Status.Phase != velerov2.DataUploadPhaseNew {
				return false
			}
			d.Status.Phase = velerov2.DataUploadPhaseAccepted
			d.Status.AcceptedByNode = c.cfg.Identity
			d.Status.AcceptedTimestamp = now()
			return true
		}) {
			return
		}
		log.Info("accepted")
	} else {
		log.Info("adopting", "phase", du.Status.Phase)
	}
	out, err := c.export(ctx, du, log)
	switch {
	case err != nil && ctrl.Err() != nil:
		log.Info("stopped; the next leader adopts the operation", "error", err)
		return
	case err != nil && ctx.Err() != nil:
		log.Info("canceling")
		c.cancelUpload(ctrl, du)
		return
	case err != nil:
		if cerr := c.clients.Cleanup(ctx, c.cfg.Namespace, OperationID("du", string(du.UID))); cerr != nil {
			log.Warn("cleanup after a failure", "error", cerr)
		}
		c.failUpload(ctx, du, err)
		return
	}
	res := out.res
	// The taken-over VolumeSnapshot stays as the base of the PVC's next
	// backup's changed blocks when the driver serves them; bases.go
	// deletes it once a newer backup of the PVC completed, or this
	// DataUpload is gone.
	keep := res.SnapshotHandle != "" && c.servesChangedBlocks(ctx, du, log)
	c.setUpload(ctx, du, func(d *velerov2.DataUpload) bool {
		d.Status.Phase = velerov2.DataUploadPhaseCompleted
		d.Status.SnapshotID = res.Snapshot
		d.Status.Progress.TotalBytes, d.Status.Progress.BytesDone = res.Size, res.Size
		d.Status.IncrementalBytes = res.NewBytes
		d.Status.NodeOS = velerov2.NodeOSLinux // the mover pods are Linux
		if d.Status.Node == "" {
			d.Status.Node = res.Node // a copy too short for a progress report
		}
		d.Status.Message = ""
		r := map[string]string{"repository": out.repo.URL, "volume": res.Volume,
			resultReadBytes: fmt.Sprint(res.ReadBytes), resultChangedBlocks: fmt.Sprint(out.changedBlocks)}
		if res.Parent != "" {
			r["parent"] = res.Parent
		}
		if keep {
			r[resultSnapshotHandle] = res.SnapshotHandle
		}
		d.Status.DataMoverResult = &r
		if d.Status.StartTimestamp == nil {
			d.Status.StartTimestamp = now()
		}
		d.Status.CompletionTimestamp = now()
		return true
	})
	log.Info("completed", "snapshot", res.Snapshot, "size", res.Size, "read_bytes", res.ReadBytes, "new_bytes", res.NewBytes,
		"changed_blocks", out.changedBlocks, "kept_for_changed_blocks", keep)
	if keep {
		return
	}
	// The snapshot stayed until the outcome was written, so that a crash
	// in between reruns the export instead of failing for a lost snapshot.
	if err := c.clients.Cleanup(ctx, c.cfg.Namespace, OperationID("du", string(du.UID))); err != nil {
		log.Warn("deleting the snapshot after completion", "error", err)
	}
}

// Keys of a DataUpload's status.dataMoverResult beside repository,
// volume and parent.
const (
	// resultSnapshotHandle: the CSI snapshot handle of the VolumeSnapshot
	// kept as the base of the PVC's next changed blocks.
	resultSnapshotHandle = "snapshotHandle"
	// resultChangedBlocks: "true" when the export read only the blocks
	// that changed since its parent, as the driver listed them.
	resultChangedBlocks = "changedBlocks"
	// resultReadBytes: what the export read from the volume.
	resultReadBytes = "readBytes"
)

// exported is what an export gave.
type exported struct {
	res           *csi.ExportResult
	repo          *Repository
	changedBlocks bool // the export read only the changed blocks
}

// export prepares the repository and the snapshot (Prepared), then runs
// the csi export, initialising the repository on first use.
func (c *Controller) export(ctx context.Context, du *velerov2.DataUpload, log *slog.Logger) (*exported, error) {
	if du.Spec.CSISnapshot == nil || du.Spec.CSISnapshot.VolumeSnapshot == "" {
		return nil, fmt.Errorf("DataUpload %s has no spec.csiSnapshot.volumeSnapshot; blockmover moves CSI snapshots only", du.Name)
	}
	repo, job, err := c.repository(ctx, du.Spec.BackupStorageLocation)
	if err != nil {
		return nil, err
	}
	op := OperationID("du", string(du.UID))
	vs, err := c.takeOver(ctx, du, op)
	if err != nil {
		return nil, err
	}
	c.setUpload(ctx, du, func(d *velerov2.DataUpload) bool {
		if d.Status.Phase != velerov2.DataUploadPhaseAccepted {
			return false
		}
		d.Status.Phase = velerov2.DataUploadPhasePrepared
		if d.Status.StartTimestamp == nil {
			d.Status.StartTimestamp = now() // the copy starts
		}
		return true
	})
	prev, err := c.baseUpload(ctx, du)
	if err != nil {
		return nil, err
	}
	var base string
	var cbt *csi.ChangedBlocks
	if prev != nil {
		base = prev.Status.SnapshotID
		cbt = c.changedBlocks(ctx, du, prev, log)
	}
	tags := map[string]string{"velero.io/data-upload": du.Name}
	for _, k := range []string{LabelBackupName, LabelBackupUID, LabelPVCUID} {
		if v := du.Labels[k]; v != "" {
			tags[k] = v
		}
	}
	args := csi.ExportArgs{
		Namespace: c.cfg.Namespace, PVC: du.Spec.SourcePVC, PVCNamespace: du.Spec.SourceNamespace,
		Operation: op, VolumeSnapshot: vs, StorageClass: du.Spec.CSISnapshot.StorageClass,
		AllowVolumeModeChange: true, Tags: tags, Base: base, ChangedBlocks: cbt, Job: job, Timing: c.timing(du.Spec.OperationTimeout),
		KeepOnFailure: true, KeepSnapshot: true, Log: log,
	}
	stop := c.watchProgress(ctx, op, func(node string, p progress) {
		c.setUpload(ctx, du, func(d *velerov2.DataUpload) bool {
			return applyProgress(&d.Status.Phase, &d.Status.StartTimestamp, &d.Status.Node, &d.Status.Progress.TotalBytes, &d.Status.Progress.BytesDone,
				velerov2.DataUploadPhasePrepared, velerov2.DataUploadPhaseInProgress, node, p)
		})
	})
	defer stop()
	res, cbtUsed, err := c.runExport(ctx, args, repo, log)
	if err != nil {
		return nil, c.explain(err, du.Spec.BackupStorageLocation, repo)
	}
	return &exported{res: res, repo: repo, changedBlocks: cbtUsed}, nil
}

// Exit codes of the mover (cmd/mover/exitcodes.go) that runExport answers.
const (
	exitNoRepository = 10 // no repository at the location
	exitNotFound     = 14 // no such snapshot (the base)
)

// runExport runs the csi export and answers two failures once each: no
// repository yet (it is initialised, then the export runs again), and a
// base snapshot that is gone, forgotten since (the export runs again as a
// full one, which still deduplicates).
func (c *Controller) runExport(ctx context.Context, args csi.ExportArgs, repo *Repository, log *slog.Logger) (res *csi.ExportResult, changedBlocks bool, err error) {
	initialised := false
	for {
		res, err := c.clients.Export(ctx, args)
		var jf *csi.JobFailedError
		switch {
		case !errors.As(err, &jf):
			return res, args.ChangedBlocks != nil && err == nil, err
		case jf.ExitCode == exitNoRepository && !initialised:
			log.Info("no repository yet: initialising it", "repository", repo.URL)
			if err := c.initRepository(ctx, repo, args.Job); err != nil {
				return nil, false, err
			}
			initialised = true
		case jf.ExitCode == exitNotFound && args.Base != "":
			log.Info("the base snapshot is gone: exporting in full", "base", args.Base, "error", jf.Message)
			args.Base, args.ChangedBlocks = "", nil
		case args.ChangedBlocks != nil:
			// The changed blocks could not be had (the driver lost the
			// base snapshot, its SnapshotMetadata service failed, …) or
			// the export failed for another reason: once more reading the
			// whole volume, which still deduplicates against the base.
			log.Info("the export with changed blocks failed: exporting again reading the whole volume", "error", jf.Message)
			args.ChangedBlocks = nil
		default:
			return nil, false, err
		}
		if err := c.deleteJob(ctx, args.Operation); err != nil {
			return nil, false, err
		}
	}
}

// baseUpload returns the newest Completed DataUpload of this mover for
// the same PVC (label velero.io/pvc-uid), whose snapshot is the base of
// du's export, or nil for a full export. The repository deduplicates
// either way; the base makes the export reuse the base's manifest pages,
// and its kept VolumeSnapshot lets it read only the changed blocks.
func (c *Controller) baseUpload(ctx context.Context, du *velerov2.DataUpload) (*velerov2.DataUpload, error) {
	uid := du.Labels[LabelPVCUID]
	if uid == "" {
		return nil, nil
	}
	list, err := c.dyn.Resource(uploadsGVR()).Namespace(du.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{LabelPVCUID: uid}).String()})
	if err != nil {
		return nil, fmt.Errorf("listing earlier DataUploads of PVC %s/%s: %w", du.Spec.SourceNamespace, du.Spec.SourcePVC, err)
	}
	var best *velerov2.DataUpload
	for i := range list.Items {
		d, err := fromUnstructured[velerov2.DataUpload](&list.Items[i])
		if err != nil || d.UID == du.UID || !c.completedUpload(d) {
			continue
		}
		if best == nil || newerUpload(d, best) {
			best = d
		}
	}
	return best, nil
}

// completedUpload reports whether d is a Completed DataUpload of this
// mover with a snapshot.
func (c *Controller) completedUpload(d *velerov2.DataUpload) bool {
	return d.Spec.DataMover == c.cfg.Name && d.Status.Phase == velerov2.DataUploadPhaseCompleted &&
		d.Status.SnapshotID != "" && d.Status.CompletionTimestamp != nil
}

// newerUpload orders Completed DataUploads: the later completion, then
// the later creation, then the greater name.
func newerUpload(a, b *velerov2.DataUpload) bool {
	if !a.Status.CompletionTimestamp.Equal(b.Status.CompletionTimestamp) {
		return a.Status.CompletionTimestamp.After(b.Status.CompletionTimestamp.Time)
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.After(b.CreationTimestamp.Time)
	}
	return a.Name > b.Name
}

// timing is the csi timing with the DataUpload's operationTimeout as the
// bound of the snapshot and bind waits, as Velero uses it.
func (c *Controller) timing(d metav1.Duration) csi.Timing {
	t := c.cfg.Timing
	if d.Duration > 0 {
		if t.Snapshot <= 0 || t.Snapshot > d.Duration {
			t.Snapshot = d.Duration
		}
		if t.Bind <= 0 || t.Bind > d.Duration {
			t.Bind = d.Duration
		}
	}
	return t
}

func now() *metav1.Time { t := metav1.NewTime(time.Now().Truncate(time.Second)); return &t }

// oneLine flattens err to one line.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// explain turns the failure of a csi operation into one line a Velero user
// can act on: the mover's own error, with what to check for the failures
// that are the user's to fix.
func (c *Controller) explain(err error, bsl string, repo *Repository) error {
	var jf *csi.JobFailedError
	if !errors.As(err, &jf) {
		return err
	}
	switch jf.MoverReason {
	case "WrongPassword":
		return fmt.Errorf("the password in Secret %s/%s (key %s) does not open repository %s of BackupStorageLocation %s: %s",
			c.cfg.Namespace, c.cfg.PasswordSecret, csi.SecretKeyPassword, repo.URL, bsl, jf.Message)
	case "StorageRefused":
		return fmt.Errorf("the storage of BackupStorageLocation %s refuses repository %s (check the bucket, region and the credentials Secret): %s", bsl, repo.URL, jf.Message)
	case "NotRepository", "NewerFormat":
		return fmt.Errorf("repository %s of BackupStorageLocation %s: %s", repo.URL, bsl, jf.Message)
	}
	return err
}
