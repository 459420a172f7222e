package csi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Timing is how long an operation waits for each step, and how often it
// looks.
type Timing struct {
	// Snapshot bounds the wait for a VolumeSnapshot to become readyToUse
	// (default 10m).
	Snapshot time.Duration
	// Job bounds the wait for the mover Job (default: its ActiveDeadline
	// plus 10m for scheduling and attaching).
	Job time.Duration
	// Bind bounds the wait for a restored PVC to be bound (default 10m).
	Bind time.Duration
	// Poll is the interval between looks (default 2s).
	Poll time.Duration
}

func (t Timing) withDefaults(jobDeadline time.Duration) Timing {
	if t.Snapshot <= 0 {
		t.Snapshot = 10 * time.Minute
	}
	if t.Job <= 0 {
		t.Job = jobDeadline + 10*time.Minute
	}
	if t.Bind <= 0 {
		t.Bind = 10 * time.Minute
	}
	if t.Poll <= 0 {
		t.Poll = 2 * time.Second
	}
	return t
}

// ExportArgs say what to export and how.
type ExportArgs struct {
	// Namespace and PVC name the volume to export (required).
	Namespace, PVC string
	// PVCNamespace is the PVC's namespace when it differs from Namespace,
	// where the operation's objects live: a control plane that has taken
	// a VolumeSnapshot over into its own namespace (as Velero's data mover
	// does, through a pre-provisioned VolumeSnapshotContent) names it in
	// VolumeSnapshot and the original PVC here. Default: Namespace.
	PVCNamespace string
	// Operation ties every object of this export together (required): a
	// DNS label the caller chooses, e.g. its backup ID. Calling Export
	// again with the same Operation after a crash reuses the objects the
	// first call created.
	Operation string
	// VolumeSnapshot names an existing, ready VolumeSnapshot of PVC to
	// export instead of taking one; it is never deleted.
	VolumeSnapshot string
	// SnapshotClass for the VolumeSnapshot (default: the class marked
	// default for the PVC's CSI driver, or its only class).
	SnapshotClass string
	// StorageClass of the block-mode clone (default: the PVC's).
	StorageClass string
	// AllowVolumeModeChange lets Export annotate the VolumeSnapshotContent
	// of a Filesystem-mode PVC's snapshot so that it can be cloned as a
	// Block-mode PVC (needs "patch" on volumesnapshotcontents).
	AllowVolumeModeChange bool
	// Volume is the name the snapshot is filed under in the repository
	// (default NAMESPACE-PVC).
	Volume string
	// Tags are added to the repository snapshot.
	Tags map[string]string
	// Base makes the export incremental on this repository snapshot
	// (ID, prefix, latest or latest:VOLUME).
	Base string
	// ChangedBlocks, with Base, has the Job read only what changed since
	// the base: an init container asks the CSI driver's SnapshotMetadata
	// service for the changed blocks (`mover k8s changes`) as the Job's
	// ServiceAccount, which needs the CBT role of deploy/rbac.yaml.
	ChangedBlocks *ChangedBlocks
	// Job shapes the mover Job (Image and Secret are required).
	Job JobOptions
	// Timing of the waits.
	Timing Timing
	// KeepSnapshot leaves the VolumeSnapshot after a successful export, as
	// the base of the next incremental export's changed blocks (with a
	// Delete policy, deleting it deletes the driver's snapshot). Cleanup
	// of the Operation deletes it later.
	KeepSnapshot bool
	// KeepOnFailure leaves the objects of a failed export in place for
	// inspection (Cleanup removes them later). By default they are deleted
	// once the export has an outcome; an export interrupted by ctx keeps
	// them either way, so that a rerun resumes.
	KeepOnFailure bool
	// Log receives one line per step (default: none).
	Log *slog.Logger
}

// Validate checks the arguments up front.
func (a *ExportArgs) Validate() error {
	switch {
	case a.Namespace == "":
		return fmt.Errorf("%w: missing Namespace", ErrInvalidArgs)
	case a.PVC == "":
		return fmt.Errorf("%w: missing PVC", ErrInvalidArgs)
	case a.PVCNamespace != "" && a.PVCNamespace != a.Namespace && a.VolumeSnapshot == "":
		return fmt.Errorf("%w: PVCNamespace %s differs from Namespace %s: give the VolumeSnapshot in Namespace", ErrInvalidArgs, a.PVCNamespace, a.Namespace)
	}
	if err := ValidateOperation(a.Operation); err != nil {
		return err
	}
	if cb := a.ChangedBlocks; cb != nil {
		switch {
		case a.Base == "":
			return fmt.Errorf("%w: ChangedBlocks needs Base", ErrInvalidArgs)
		case cb.BaseSnapshotHandle == "":
			return fmt.Errorf("%w: missing ChangedBlocks.BaseSnapshotHandle", ErrInvalidArgs)
		case a.Job.ServiceAccount == "":
			return fmt.Errorf("%w: ChangedBlocks needs Job.ServiceAccount (allowed to use the SnapshotMetadata service)", ErrInvalidArgs)
		}
	}
	for k := range a.Tags {
		if k == "" {
			return fmt.Errorf("%w: empty tag key", ErrInvalidArgs)
		}
	}
	return a.Job.validate()
}

// ChangedBlocks say against which CSI snapshot the changes are asked for.
type ChangedBlocks struct {
	// BaseSnapshotHandle is the CSI snapshot handle of the VolumeSnapshot
	// the Base export read (its ExportResult.SnapshotHandle). That
	// VolumeSnapshot may be gone; the driver's snapshot must not be.
	BaseSnapshotHandle string
}

func (a *ExportArgs) volume() string {
	if a.Volume != "" {
		return a.Volume
	}
	return a.pvcNamespace() + "-" + a.PVC
}

func (a *ExportArgs) pvcNamespace() string {
	if a.PVCNamespace != "" {
		return a.PVCNamespace
	}
	return a.Namespace
}

// ExportResult is the outcome of an export.
type ExportResult struct {
	// Result is the mover's own: repository snapshot ID, sizes, timing.
	Result
	// VolumeSnapshot the export read, its VolumeSnapshotContent and the
	// CSI snapshot handle (the base of a later CBT delta).
	VolumeSnapshot, VolumeSnapshotContent, SnapshotHandle string
}

// Export runs an export end to end: VolumeSnapshot of the PVC (unless
// args.VolumeSnapshot names one), block-mode clone PVC of the snapshot,
// mover Job reading the clone as a device, the Job's result, cleanup of the
// clone, the Job and the VolumeSnapshot it created.
func (c *Clients) Export(ctx context.Context, args ExportArgs) (*ExportResult, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := args.Validate(); err != nil {
		return nil, err
	}
	tm := args.Timing.withDefaults(args.Job.activeDeadline())
	log := logger(args.Log).With("operation", args.Operation, "namespace", args.Namespace)
	res, err := c.export(ctx, &args, tm, log)
	done := ""
	if err == nil {
		done = "export done (snapshot " + res.Snapshot + ")"
	}
	if err := c.settle(ctx, args.Namespace, args.Operation, err, done, args.KeepOnFailure, args.KeepSnapshot, log); err != nil {
		return nil, err
	}
	return res, nil
}

// settle ends an operation whose run returned runErr. A run interrupted by
// ctx, or one that failed while keepOnFailure or with a *keepError, keeps
// every object (for a rerun, or a look); so does a run that failed otherwise than by giving up
// (a wait's timeout, a failed Job: gaveUp) while its mover Job may still
// be running: an API error must not make cleanup delete a Job that is
// doing its work, which a rerun adopts. Any other outcome deletes the
// operation's objects (Cleanup), leaving the VolumeSnapshot after a
// success when keepSnapshot. It returns runErr, or after a successful run
// (described by done) the error of the cleanup; a cleanup that fails after
// a failed run is logged.
func (c *Clients) settle(ctx context.Context, ns, op string, runErr error, done string, keepOnFailure, keepSnapshot bool, log *slog.Logger) error {
	var keep *keepError
	if runErr != nil && (ctx.Err() != nil || keepOnFailure || errors.As(runErr, &keep)) {
		return runErr
	}
	if runErr != nil && !gaveUp(runErr) {
		if running, err := c.jobRunning(ctx, ns, op); running || err != nil {
			log.Warn("the operation failed while its mover Job may still run: every object is kept", "error", runErr, "job", ObjectName(op))
			return fmt.Errorf("%w (the mover Job %s/%s may still be running: it is kept with the operation's other objects; run the operation again to adopt it, or Cleanup)",
				runErr, ns, ObjectName(op))
		}
	}
	cerr := c.cleanup(ctx, ns, op, runErr == nil && keepSnapshot)
	switch {
	case cerr == nil:
		return runErr
	case runErr == nil:
		return fmt.Errorf("%s, but cleanup failed: %w", done, cerr)
	}
	log.Warn("cleanup failed", "error", cerr)
	return runErr
}

// keepError is a failure after which the operation's objects must stay
// for a rerun: an import whose finished Job holds a result that could not
// be recorded on the target PVC.
type keepError struct{ err error }

func (e *keepError) Error() string {
	return e.err.Error() + " (the operation's objects are kept: run it again to finish)"
}

func (e *keepError) Unwrap() error { return e.err }

// gaveUp reports whether err ends an operation for good: a wait that ran
// out of time or a mover Job that failed (or could not start).
func gaveUp(err error) bool {
	var jf *JobFailedError
	return errors.Is(err, ErrTimeout) || errors.As(err, &jf)
}

// jobRunning reports whether the operation's Job exists and has not
// finished. An error means that it cannot tell.
func (c *Clients) jobRunning(ctx context.Context, ns, op string) (bool, error) {
	job, err := c.Kube.BatchV1().Jobs(ns).Get(ctx, ObjectName(op), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return job.Labels[LabelOperation] == op && jobCondition(job, batchv1.JobComplete) == nil && jobCondition(job, batchv1.JobFailed) == nil, nil
}

func (c *Clients) export(ctx context.Context, args *ExportArgs, tm Timing, log *slog.Logger) (*ExportResult, error) {
	ns, op := args.Namespace, args.Operation
	src, err := c.inspectPVC(ctx, args.pvcNamespace(), args.PVC)
	if err != nil {
		return nil, err
	}
	// The Job may have finished in an earlier run that crashed before
	// cleaning up: its result is all that is needed.
	if res, err := c.finishedJob(ctx, ns, op, tm); res != nil || err != nil {
		if err != nil {
			return nil, err
		}
		log.Info("found the finished mover Job of an earlier run")
		return &ExportResult{Result: *res}, nil
	}

	vs, err := c.readySnapshot(ctx, args, src, tm, log)
	if err != nil {
		return nil, err
	}
	out := &ExportResult{VolumeSnapshot: vs.Name, VolumeSnapshotContent: *vs.Status.BoundVolumeSnapshotContentName}
	if src.mode != corev1.PersistentVolumeBlock {
		if err := c.allowVolumeModeChange(ctx, vs, src.mode, corev1.PersistentVolumeBlock, args.AllowVolumeModeChange); err != nil {
			return nil, err
		}
	}
	vsc, err := c.Snapshot.SnapshotV1().VolumeSnapshotContents().Get(ctx, out.VolumeSnapshotContent, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("VolumeSnapshotContent %s of VolumeSnapshot %s/%s: %w", out.VolumeSnapshotContent, ns, vs.Name, explain(err))
	}
	if vsc.Status != nil && vsc.Status.SnapshotHandle != nil {
		out.SnapshotHandle = *vsc.Status.SnapshotHandle
	}

	sc := args.StorageClass
	if sc == "" && src.pvc.Spec.StorageClassName != nil {
		sc = *src.pvc.Spec.StorageClassName
	}
	size := restoreSize(vs, src.pvc.Status.Capacity[corev1.ResourceStorage])
	clone, created, err := c.ensurePVC(ctx, ns, op, RoleClone, pvcSpec{
		name: ObjectName(op), storageClass: sc, size: size, mode: corev1.PersistentVolumeBlock,
		dataSource: vs.Name, labels: args.Job.Labels,
	})
	if err != nil {
		return nil, err
	}
	log.Info("block-mode clone", "pvc", clone.Name, "size", size.String(), "created", created)

	jargs := []string{"export", "--source=" + DevicePath, "--name=" + args.volume()}
	keys := make([]string, 0, len(args.Tags))
	for k := range args.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		jargs = append(jargs, "--tag="+k+"="+args.Tags[k])
	}
	if args.Base != "" {
		jargs = append(jargs, "--base="+args.Base)
	}
	spec := jobSpec{ns: ns, op: op, pvc: clone.Name, readOnly: true, args: jargs}
	if cb := args.ChangedBlocks; cb != nil {
		spec.cbt = &cbtSpec{snapshot: vs.Name, baseHandle: cb.BaseSnapshotHandle, size: size.Value()}
	}
	jo := args.Job
	jo.Affinity = withNodeAffinity(jo.Affinity, src.nodeAffinity)
	job := buildJob(spec, &jo)
	res, err := c.runJob(ctx, job, tm, log)
	if err != nil {
		return nil, err
	}
	out.Result = *res
	return out, nil
}

// readySnapshot returns the VolumeSnapshot of the export, ready: the one
// args names, or one made (or found, in a rerun) for the operation.
func (c *Clients) readySnapshot(ctx context.Context, args *ExportArgs, src *volumeInfo, tm Timing, log *slog.Logger) (*snapv1.VolumeSnapshot, error) {
	ns, op := args.Namespace, args.Operation
	var vs *snapv1.VolumeSnapshot
	var err error
	if args.VolumeSnapshot != "" {
		vs, err = c.Snapshot.SnapshotV1().VolumeSnapshots(ns).Get(ctx, args.VolumeSnapshot, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("VolumeSnapshot %s/%s: %w", ns, args.VolumeSnapshot, explain(err))
		}
		if !snapshotOf(vs, args.PVC) {
			return nil, fmt.Errorf("%w: VolumeSnapshot %s/%s is not a snapshot of PVC %s", ErrInvalidArgs, ns, vs.Name, args.PVC)
		}
	} else {
		class := args.SnapshotClass
		if class == "" {
			if class, err = c.FindSnapshotClass(ctx, src.driver); err != nil {
				return nil, err
			}
		}
		var created bool
		if vs, created, err = c.ensureSnapshot(ctx, ns, op, args.PVC, class, args.Job.Labels); err != nil {
			return nil, err
		}
		log.Info("volume snapshot", "name", vs.Name, "class", class, "created", created)
	}
	return c.WaitSnapshotReady(ctx, ns, vs.Name, tm.Poll, tm.Snapshot)
}

// withNodeAffinity returns a with the source volume's required node
// affinity added, so that the Job's pod, and with WaitForFirstConsumer the
// clone it mounts, lands where node-local storage can make the clone. a is
// not modified.
func withNodeAffinity(a *corev1.Affinity, required *corev1.NodeSelector) *corev1.Affinity {
	if required == nil || len(required.NodeSelectorTerms) == 0 {
		return a
	}
	out := &corev1.Affinity{}
	if a != nil {
		out = a.DeepCopy()
	}
	if out.NodeAffinity == nil {
		out.NodeAffinity = &corev1.NodeAffinity{}
	}
	na := out.NodeAffinity
	if na.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		na.RequiredDuringSchedulingIgnoredDuringExecution = required.DeepCopy()
		return out
	}
	// Both must hold: each of the caller's terms ANDed with each of the
	// volume's (terms are ORed, expressions within a term ANDed).
	var terms []corev1.NodeSelectorTerm
	for _, t1 := range na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, t2 := range required.NodeSelectorTerms {
			terms = append(terms, corev1.NodeSelectorTerm{
				MatchExpressions: append(slices.Clone(t1.MatchExpressions), t2.MatchExpressions...),
				MatchFields:      append(slices.Clone(t1.MatchFields), t2.MatchFields...),
			})
		}
	}
	na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms = terms
	return out
}

// snapshotOf reports whether vs may be a snapshot of pvc: it names pvc as
// its source, or it is a pre-provisioned snapshot (of a content the caller
// took over), which names no PVC.
func snapshotOf(vs *snapv1.VolumeSnapshot, pvc string) bool {
	if s := vs.Spec.Source.PersistentVolumeClaimName; s != nil {
		return *s == pvc
	}
	return vs.Spec.Source.VolumeSnapshotContentName != nil
}

// runJob creates the Job (or finds the one of an earlier run) and waits
// for its result.
func (c *Clients) runJob(ctx context.Context, job *batchv1.Job, tm Timing, log *slog.Logger) (*Result, error) {
	op := job.Labels[LabelOperation]
	jc := c.Kube.BatchV1().Jobs(job.Namespace)
	got, created, err := createOrGet(ctx, "Job", op, job, jc.Create, jc.Get)
	if err != nil {
		return nil, err
	}
	log.Info("mover Job", "job", got.Name, "created", created)
	res, err := c.WaitJob(ctx, got.Namespace, got.Name, tm.Poll, tm.Job)
	if err != nil {
		return nil, err
	}
	if res.Error != "" {
		return nil, &JobFailedError{Namespace: got.Namespace, Job: got.Name, Message: res.Error, MoverReason: res.Reason, Retryable: res.Retryable, ExitCode: res.ExitCode}
	}
	log.Info("mover Job done", "snapshot", res.Snapshot, "size", res.Size, "seconds", res.Seconds)
	return res, nil
}

// finishedJob returns the result of the operation's Job if it exists and
// has succeeded, a *JobFailedError if it failed, and nil, nil if there is
// no Job yet or it is still running.
func (c *Clients) finishedJob(ctx context.Context, ns, op string, tm Timing) (*Result, error) {
	job, err := c.Kube.BatchV1().Jobs(ns).Get(ctx, ObjectName(op), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mover Job %s/%s: %w", ns, ObjectName(op), explain(err))
	}
	if err := checkOwned("Job", job, op); err != nil {
		return nil, err
	}
	if jobCondition(job, batchv1.JobComplete) == nil && jobCondition(job, batchv1.JobFailed) == nil {
		return nil, nil
	}
	res, err := c.WaitJob(ctx, ns, job.Name, tm.Poll, tm.Job)
	if err == nil && res.Error != "" {
		err = &JobFailedError{Namespace: ns, Job: job.Name, Message: res.Error, MoverReason: res.Reason, Retryable: res.Retryable, ExitCode: res.ExitCode}
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

func logger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// IsTimeout reports whether err is a wait that ran out of time.
func IsTimeout(err error) bool { return errors.Is(err, ErrTimeout) }
