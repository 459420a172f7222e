package csi

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
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
	size := *resource.NewQuantity(args.Size, resource.BinarySI)
	fs := args.VolumeMode == corev1.PersistentVolumeFilesystem
	blockName, role := args.PVC, RoleTarget
	if fs {
		blockName, role = ObjectName(op), RoleClone
	}
	res, err := c.finishedJob(ctx, ns, op, tm)
	if err != nil {
		return nil, err
	}
	if res == nil {
		spec := pvcSpec{name: blockName, storageClass: args.StorageClass, size: size, mode: corev1.PersistentVolumeBlock, labels: args.Job.Labels}
		if !fs {
			spec.accessModes = args.AccessModes
		}
		block, created, err := c.ensurePVC(ctx, ns, op, role, spec)
		if err != nil {
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
	out := &ImportResult{Result: *res, PVC: args.PVC}
	if !fs {
		return out, nil
	}

	// Filesystem destination: snapshot the staging block PVC, let the
	// snapshot be restored in another mode, restore it under args.PVC.
	bindMode, provisioner, err := c.bindingMode(ctx, args.StorageClass)
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
		name: args.PVC, storageClass: args.StorageClass, size: restoreSize(vs, size),
		mode: corev1.PersistentVolumeFilesystem, dataSource: vs.Name, labels: args.Job.Labels, accessModes: args.AccessModes,
	})
	if err != nil {
		return nil, err
	}
	log.Info("filesystem-mode PVC", "pvc", target.Name, "created", created)
	if bindMode == storagev1.VolumeBindingWaitForFirstConsumer {
		out.Pending = true
		return out, nil
	}
	if err := c.waitBound(ctx, ns, target.Name, tm.Poll, tm.Bind); err != nil {
		return nil, err
	}
	return out, nil
}
