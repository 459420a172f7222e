package csi

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations that tie the objects of one operation together.
// Every object an operation creates (VolumeSnapshot, clone PVC, Job) is
// named ObjectName(operation) and labelled LabelOperation=operation, so an
// operation that is started again after a crash finds its objects instead
// of creating duplicates, and Cleanup finds everything to delete.
const (
	LabelManagedBy    = "app.kubernetes.io/managed-by"
	ManagedBy         = "blockmover"
	LabelOperation    = "blockmover.io/operation"
	LabelRole         = "blockmover.io/role" // snapshot, clone, job, target
	AnnotationVolume  = "blockmover.io/volume"
	AnnotationCreated = "blockmover.io/created" // "true" on objects this package created

	// AnnotationAllowVolumeModeChange on a VolumeSnapshotContent lets a
	// snapshot of a Filesystem-mode volume be restored as a Block-mode PVC
	// and the other way round (KEP-3141). The snapshot controller and the
	// external-provisioner refuse such a restore without it when they run
	// with --prevent-volume-mode-conversion (the default since 1.30).
	AnnotationAllowVolumeModeChange = "snapshot.storage.kubernetes.io/allow-volume-mode-change"
	// AnnotationDefaultSnapshotClass marks the VolumeSnapshotClass used for
	// a driver when none is named.
	AnnotationDefaultSnapshotClass = "snapshot.storage.kubernetes.io/is-default-class"
)

// Roles of the objects of an operation (the LabelRole value).
const (
	RoleSnapshot = "snapshot"
	RoleClone    = "clone"
	RoleJob      = "job"
	RoleTarget   = "target"
)

var operationRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// MaxOperationLen keeps ObjectName a valid label value (Jobs put their name
// in a label) with room for the pod name suffix.
const MaxOperationLen = 40

// ValidateOperation checks an operation ID: a DNS label of at most
// MaxOperationLen characters.
func ValidateOperation(op string) error {
	if op == "" {
		return fmt.Errorf("%w: missing Operation", ErrInvalidArgs)
	}
	if len(op) > MaxOperationLen || !operationRE.MatchString(op) {
		return fmt.Errorf("%w: Operation %q: want lower-case letters, digits and '-', at most %d characters", ErrInvalidArgs, op, MaxOperationLen)
	}
	return nil
}

// ObjectName is the name of every object of operation op.
func ObjectName(op string) string { return "mover-" + op }

// objectMeta returns the metadata of an object of op in ns with role.
func objectMeta(ns, op, role string, extra map[string]string) metav1.ObjectMeta {
	l := map[string]string{}
	for k, v := range extra {
		l[k] = v
	}
	l[LabelManagedBy] = ManagedBy
	l[LabelOperation] = op
	l[LabelRole] = role
	return metav1.ObjectMeta{Name: ObjectName(op), Namespace: ns, Labels: l,
		Annotations: map[string]string{AnnotationCreated: "true"}}
}

// ErrConflict is wrapped when an object with an operation's name exists but
// belongs to something else.
var ErrConflict = errors.New("object exists and belongs to another operation")

// checkOwned verifies that an existing object found under an operation's
// name carries the operation's label.
func checkOwned(kind string, m metav1.Object, op string) error {
	if m.GetLabels()[LabelOperation] != op {
		return fmt.Errorf("%s %s/%s: %w (label %s=%q, want %q)", kind, m.GetNamespace(), m.GetName(), ErrConflict,
			LabelOperation, m.GetLabels()[LabelOperation], op)
	}
	if m.GetDeletionTimestamp() != nil {
		return fmt.Errorf("%s %s/%s of operation %s is being deleted; wait for it to go, then run the operation again", kind, m.GetNamespace(), m.GetName(), op)
	}
	return nil
}

// createOrGet creates obj, or gets the existing object of the same name
// and checks that it belongs to op. created tells which happened.
func createOrGet[T metav1.Object](ctx context.Context, kind, op string, obj T,
	create func(context.Context, T, metav1.CreateOptions) (T, error),
	get func(context.Context, string, metav1.GetOptions) (T, error)) (out T, created bool, err error) {
	out, err = create(ctx, obj, metav1.CreateOptions{})
	if err == nil {
		return out, true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return out, false, fmt.Errorf("creating %s %s/%s: %w", kind, obj.GetNamespace(), obj.GetName(), explain(err))
	}
	out, err = get(ctx, obj.GetName(), metav1.GetOptions{})
	if err != nil {
		return out, false, fmt.Errorf("getting %s %s/%s: %w", kind, obj.GetNamespace(), obj.GetName(), explain(err))
	}
	if err := checkOwned(kind, out, op); err != nil {
		return out, false, err
	}
	return out, false, nil
}

// ErrForbidden is wrapped by errors the API server answered with 403.
var ErrForbidden = errors.New("forbidden")

// explain wraps a Forbidden answer so callers can test for ErrForbidden
// while keeping the server's message (which names user, verb and resource).
func explain(err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	return err
}

// ErrTimeout is wrapped when a wait ran out of its time.
var ErrTimeout = errors.New("timed out")

// poll calls check every interval until it reports done, fails, the timeout
// passes (an error wrapping ErrTimeout and describing what was awaited by
// the last state check returned) or ctx ends.
func poll(ctx context.Context, interval, timeout time.Duration, what string, check func(context.Context) (done bool, state string, err error)) error {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, state, err := check(ctx)
		if err != nil || done {
			return err
		}
		if timeout > 0 && time.Now().After(deadline) {
			if state != "" {
				state = " (" + state + ")"
			}
			return fmt.Errorf("%s: %w after %s%s", what, ErrTimeout, timeout, state)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
