package csi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ImportArgs say what to restore where.
type ImportArgs struct {
	// Namespace of the new PVC (required).
	Namespace string
	// PVC is the name of the PVC to create and fill (required). An existing
	// PVC of that name is used only if an earlier run of this Operation
	// created it.
	PVC string
	// Operation ties every object of this import together (required); see
	// ExportArgs.Operation.
	Operation string
	// Snapshot is the repository snapshot to import (ID, prefix, latest or
	// latest:VOLUME; required).
	Snapshot string
	// Size of the snapshot in bytes (required): the new PVC requests at
	// least this much. The export result has it.
	Size int64
	// StorageClass of the new PVC (default: the cluster's default class).
	StorageClass string
	// VolumeMode of the new PVC (default Block). For Filesystem, the
	// snapshot is imported onto a Block-mode staging PVC, which is then
	// snapshotted and restored as a Filesystem-mode PVC: the data is the
	// filesystem the exported volume held. That restore needs the
	// volume-mode-change annotation (AllowVolumeModeChange).
	VolumeMode corev1.PersistentVolumeMode
	// SnapshotClass for the staging snapshot of a Filesystem import
	// (default: found by the storage class's provisioner).
	SnapshotClass string
	// AllowVolumeModeChange: see ExportArgs.
	AllowVolumeModeChange bool
	// AccessModes of the new PVC (default ReadWriteOnce); the staging PVC
	// of a Filesystem import is always ReadWriteOnce.
	AccessModes []corev1.PersistentVolumeAccessMode
	// Job shapes the mover Job (Image and Secret are required).
	Job JobOptions
	// Timing of the waits.
	Timing Timing
	// KeepOnFailure: see ExportArgs.
	KeepOnFailure bool
	// Log receives one line per step (default: none).
	Log *slog.Logger
}

// Validate checks the arguments up front.
func (a *ImportArgs) Validate() error {
	switch {
	case a.Namespace == "":
		return fmt.Errorf("%w: missing Namespace", ErrInvalidArgs)
	case a.PVC == "":
		return fmt.Errorf("%w: missing PVC", ErrInvalidArgs)
	case a.Snapshot == "":
		return fmt.Errorf("%w: missing Snapshot", ErrInvalidArgs)
	case a.Size <= 0:
		return fmt.Errorf("%w: missing Size (the snapshot's size in bytes)", ErrInvalidArgs)
	case a.VolumeMode != "" && a.VolumeMode != corev1.PersistentVolumeBlock && a.VolumeMode != corev1.PersistentVolumeFilesystem:
		return fmt.Errorf("%w: VolumeMode %q: want Block or Filesystem", ErrInvalidArgs, a.VolumeMode)
	}
	if err := ValidateOperation(a.Operation); err != nil {
		return err
	}
	if a.PVC == ObjectName(a.Operation) {
		return fmt.Errorf("%w: PVC %s is the name of the operation's own staging objects", ErrInvalidArgs, a.PVC)
	}
	return a.Job.validate()
}

// ImportResult is the outcome of an import.
type ImportResult struct {
	// Result is the mover's own.
	Result
	// PVC is the filled PVC.
	PVC string
	// Pending is set for a Filesystem import onto a storage class that
	// binds on first use: the PVC is restored from the staging
	// VolumeSnapshot when its first pod is scheduled, so that snapshot is
	// kept (the staging PVC and the Job are deleted); call Cleanup once the
	// PVC is bound.
	Pending bool
}

// Import runs an import end to end: a Block-mode PVC, the mover Job
// writing the snapshot onto it, and for a Filesystem-mode destination the
// snapshot-and-restore step described at ImportArgs.VolumeMode.
func (c *Clients) Import(ctx context.Context, args ImportArgs) (*ImportResult, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := args.Validate(); err != nil {
		return nil, err
	}
	tm := args.Timing.withDefaults(args.Job.activeDeadline())
	log := logger(args.Log).With("operation", args.Operation, "namespace", args.Namespace)
	res, err := c.importOp(ctx, &args, tm, log)
	// A Pending Filesystem-mode PVC is yet to be restored from the staging
	// VolumeSnapshot, which stays; the staging PVC and the Job go.
	pending := err == nil && res.Pending
	if err := c.settle(ctx, args.Namespace, args.Operation, err, "import done", args.KeepOnFailure, pending, log); err != nil {
		return nil, err
	}
	return res, nil
}

func (c *Clients) importOp(ctx context.Context, args *ImportArgs, tm Timing, log *slog.Logger) (*ImportResult, error) {
	ns, op := args.Namespace, args.Operation
	fs := args.VolumeMode == corev1.PersistentVolumeFilesystem
	// A PVC that holds this operation's import already is never written
	// again: an application may use it by now.
	out, target, err := c.importedBefore(ctx, args)
	if err != nil {
		return nil, err
	}
	if out != nil {
		log.Info("the PVC holds this operation's import already", "pvc", args.PVC, "snapshot", out.Snapshot)
		if !fs {
			return out, nil
		}
		return c.filesystemReady(ctx, args, target, out, tm)
	}
	size := *resource.NewQuantity(args.Size, resource.BinarySI)
	blockName, role := args.PVC, RoleTarget
	if fs {
		blockName, role = ObjectName(op), RoleClone
	}
	res, err := c.finishedJob(ctx, ns, op, tm)
	if err != nil {
		return nil, err
	}
	var block *corev1.PersistentVolumeClaim // the Block-mode target, when known
	if !fs {
		block = target
	}
	if res == nil {
		spec := pvcSpec{name: blockName, storageClass: args.StorageClass, size: size, mode: corev1.PersistentVolumeBlock, labels: args.Job.Labels}
		if !fs {
			spec.accessModes = args.AccessModes
		}
		var created bool
		if block, created, err = c.ensurePVC(ctx, ns, op, role, spec); err != nil {
			return nil, err
		}
		log.Info("block-mode PVC", "pvc", block.Name, "size", size.String(), "created", created)
		jargs := []string{"import", "--snapshot=" + args.Snapshot, "--target=" + DevicePath}
		job := buildJob(jobSpec{ns: ns, op: op, pvc: block.Name, args: jargs}, &args.Job)
		if res, err = c.runJob(ctx, job, tm, log); err != nil {
			return nil, err
		}
	} else {
		log.Info("found the finished mover Job of an earlier run")
	}
	out = &ImportResult{Result: *res, PVC: args.PVC}
	rec, err := newImportRecord(op, args.Snapshot, res)
	if err != nil {
		return nil, err
	}
	if !fs {
		// Before the Job that holds the result is deleted; if that
		// fails, the Job stays for a rerun to record its result.
		if err := c.recordImport(ctx, ns, args.PVC, block, rec, tm.Poll); err != nil {
			return nil, &keepError{err}
		}
		return out, nil
	}
	return c.restoreFilesystem(ctx, args, out, rec, tm, log)
}

// restoreFilesystem snapshots the staging block PVC of a Filesystem
// import, lets the snapshot be restored in another mode and restores it
// under args.PVC, which is created with the import's record.
func (c *Clients) restoreFilesystem(ctx context.Context, args *ImportArgs, out *ImportResult, rec string, tm Timing, log *slog.Logger) (*ImportResult, error) {
	ns, op := args.Namespace, args.Operation
	blockName := ObjectName(op)
	_, provisioner, err := c.bindingMode(ctx, args.StorageClass)
	if err != nil {
		return nil, err
	}
	class := args.SnapshotClass
	if class == "" {
		if provisioner == "" {
			info, err := c.inspectPVC(ctx, ns, blockName)
			if err != nil {
				return nil, err
			}
			provisioner = info.driver
		}
		if class, err = c.FindSnapshotClass(ctx, provisioner); err != nil {
			return nil, err
		}
	}
	vs, created, err := c.ensureSnapshot(ctx, ns, op, blockName, class, args.Job.Labels)
	if err != nil {
		return nil, err
	}
	log.Info("staging volume snapshot", "name", vs.Name, "class", class, "created", created)
	if vs, err = c.WaitSnapshotReady(ctx, ns, vs.Name, tm.Poll, tm.Snapshot); err != nil {
		return nil, err
	}
	if err := c.allowVolumeModeChange(ctx, vs, corev1.PersistentVolumeBlock, corev1.PersistentVolumeFilesystem, args.AllowVolumeModeChange); err != nil {
		return nil, err
	}
	target, created, err := c.ensurePVC(ctx, ns, op, RoleTarget, pvcSpec{
		name: args.PVC, storageClass: args.StorageClass, size: restoreSize(vs, *resource.NewQuantity(args.Size, resource.BinarySI)),
		mode: corev1.PersistentVolumeFilesystem, dataSource: vs.Name, labels: args.Job.Labels, accessModes: args.AccessModes,
		annotations: map[string]string{AnnotationImport: rec},
	})
	if err != nil {
		return nil, err
	}
	log.Info("filesystem-mode PVC", "pvc", target.Name, "created", created)
	return c.filesystemReady(ctx, args, target, out, tm)
}

// filesystemReady waits until the Filesystem-mode target of an import is
// bound, or marks the result Pending when its class binds on first use
// and it is not bound yet.
func (c *Clients) filesystemReady(ctx context.Context, args *ImportArgs, target *corev1.PersistentVolumeClaim, out *ImportResult, tm Timing) (*ImportResult, error) {
	bindMode, _, err := c.bindingMode(ctx, args.StorageClass)
	if err != nil {
		return nil, err
	}
	if bindMode == storagev1.VolumeBindingWaitForFirstConsumer && target.Status.Phase != corev1.ClaimBound {
		out.Pending = true
		return out, nil
	}
	if err := c.waitBound(ctx, args.Namespace, target.Name, tm.Poll, tm.Bind); err != nil {
		return nil, err
	}
	return out, nil
}

// AnnotationImport on the target PVC of an import records that the import
// finished: a JSON object with the operation, the snapshot as the import
// named it (ImportArgs.Snapshot) and the mover's result. It is set before
// the Job that holds the result is deleted (on a Filesystem-mode target,
// when the PVC is created), so that a rerun of the operation, at any point
// of a crash, returns the recorded result instead of importing again over
// a volume an application may have started to use. It stays on the PVC:
// where its data came from.
const AnnotationImport = "blockmover.io/import"

// importRecord is the value of AnnotationImport.
type importRecord struct {
	Operation string          `json:"operation"`
	Snapshot  string          `json:"snapshot"`
	Result    json.RawMessage `json:"result"`
}

// newImportRecord returns the AnnotationImport value for the import of
// snapshot by op with result res.
func newImportRecord(op, snapshot string, res *Result) (string, error) {
	raw := res.Raw
	if len(raw) == 0 {
		var err error
		if raw, err = json.Marshal(res); err != nil {
			return "", fmt.Errorf("recording the import's result: %w", err)
		}
	}
	b, err := json.Marshal(importRecord{Operation: op, Snapshot: snapshot, Result: raw})
	if err != nil {
		return "", fmt.Errorf("recording the import's result: %w", err)
	}
	return string(b), nil
}

// importedBefore returns the recorded result when args.PVC holds the
// import of this operation already, nil when it does not exist or holds no
// record yet; and the PVC when it exists. A record of another snapshot, or
// a PVC that belongs to another operation, is an ErrConflict.
func (c *Clients) importedBefore(ctx context.Context, args *ImportArgs) (*ImportResult, *corev1.PersistentVolumeClaim, error) {
	ns, op := args.Namespace, args.Operation
	pvc, err := c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, args.PVC, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("PVC %s/%s: %w", ns, args.PVC, explain(err))
	}
	if err := checkOwned("PVC", pvc, op); err != nil {
		return nil, nil, err
	}
	v, ok := pvc.Annotations[AnnotationImport]
	if !ok {
		return nil, pvc, nil
	}
	var rec importRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return nil, nil, fmt.Errorf("PVC %s/%s: annotation %s: %w", ns, args.PVC, AnnotationImport, err)
	}
	if rec.Operation != op || rec.Snapshot != args.Snapshot {
		return nil, nil, fmt.Errorf("PVC %s/%s: %w (it holds the import of snapshot %q by operation %s; this call asks for %q: use a new operation and PVC)",
			ns, args.PVC, ErrConflict, rec.Snapshot, rec.Operation, args.Snapshot)
	}
	mode := corev1.PersistentVolumeFilesystem
	if pvc.Spec.VolumeMode != nil {
		mode = *pvc.Spec.VolumeMode
	}
	if want := args.volumeMode(); mode != want {
		return nil, nil, fmt.Errorf("PVC %s/%s: %w (volume mode is %s, not %s)", ns, args.PVC, ErrConflict, mode, want)
	}
	res, err := ParseResult(string(rec.Result))
	if err != nil {
		return nil, nil, fmt.Errorf("PVC %s/%s: annotation %s: %w", ns, args.PVC, AnnotationImport, err)
	}
	return &ImportResult{Result: *res, PVC: args.PVC}, pvc, nil
}

// volumeMode is the volume mode of the import's target.
func (a *ImportArgs) volumeMode() corev1.PersistentVolumeMode {
	if a.VolumeMode == "" {
		return corev1.PersistentVolumeBlock
	}
	return a.VolumeMode
}

// recordTimeout bounds the retries of recordImport while the API server
// fails transiently.
const recordTimeout = 2 * time.Minute

// recordImport sets AnnotationImport to rec on the Block-mode target PVC
// the Job wrote (the one of block when known: the patch names its UID, so
// that it never lands on another PVC of the same name). Transient API
// errors are retried, every interval at first, for up to recordTimeout.
func (c *Clients) recordImport(ctx context.Context, ns, name string, block *corev1.PersistentVolumeClaim, rec string, interval time.Duration) error {
	meta := map[string]any{"annotations": map[string]string{AnnotationImport: rec}}
	if block != nil {
		meta["uid"] = block.UID
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return fmt.Errorf("recording the import on PVC %s/%s: %w", ns, name, err)
	}
	return poll(ctx, interval, recordTimeout, fmt.Sprintf("recording the import on PVC %s/%s", ns, name), func(ctx context.Context) (bool, string, error) {
		_, err := c.Kube.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil {
			return false, "", fmt.Errorf("recording the import on PVC %s/%s (needs the verb \"patch\" on persistentvolumeclaims, deploy/rbac.yaml): %w", ns, name, explain(err))
		}
		return true, "", nil
	})
}
