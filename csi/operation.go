package csi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
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

// IsTransient reports whether err, from a call to the API server, may go
// away if the call is made again: the server unreachable or restarting
// (connection refused or reset, EOF, a timeout), overloaded (429 Too Many
// Requests) or failing inside (5xx). An answer that says something about
// the request (Forbidden, NotFound, Invalid, Conflict, Unauthorized) is
// not transient, nor is the end of the caller's context.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		code := st.Status().Code
		return code == http.StatusTooManyRequests || code >= 500 ||
			apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err)
	}
	var ne net.Error
	var dns *net.DNSError
	switch {
	case utilnet.IsConnectionRefused(err), utilnet.IsConnectionReset(err), utilnet.IsProbableEOF(err),
		utilnet.IsTimeout(err), utilnet.IsHTTP2ConnectionLost(err),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, context.DeadlineExceeded), // a client-side request timeout
		errors.As(err, &ne) && ne.Timeout(),
		errors.As(err, &dns) && (dns.IsTemporary || dns.IsTimeout):
		return true
	}
	return false
}

// maxBackoff bounds the wait between retries of a failing API call: 15
// polling intervals, at most 30 s (but never less than one interval).
func maxBackoff(interval time.Duration) time.Duration {
	return max(interval, min(15*interval, 30*time.Second))
}

// restartGrace is how long after a transient API error a Forbidden or
// Unauthorized answer is taken for a restarting API server's: it serves
// before its authorizer and authenticator caches are filled, and until
// then denies every request (RBAC: "clusterrole ... not found"). Seen on
// the test cluster's kube-apiserver v1.37 within seconds of its restart.
const restartGrace = 30 * time.Second

// poll calls check every interval until it reports done, fails, the timeout
// passes (an error wrapping ErrTimeout and describing what was awaited by
// the last state check returned) or ctx ends. An error of check for which
// IsTransient holds (the API server restarting, say) does not end the
// wait: check is called again after a backoff that doubles from interval
// up to maxBackoff, until the timeout, whose error then wraps the last
// one too; so is a Forbidden or Unauthorized answer within restartGrace of
// such an error, or, once a check of this wait went through, for
// restartGrace from the first of such answers in a row (an API server
// restarted between two checks, unseen, denies the same identity it let
// through before). Any other error of check ends the wait at once.
func poll(ctx context.Context, interval, timeout time.Duration, what string, check func(context.Context) (done bool, state string, err error)) error {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	deadline := time.Now().Add(timeout)
	t := time.NewTimer(interval)
	defer t.Stop()
	failures := 0
	var outage time.Time // of the last transient error
	var denied time.Time // the first of the denials in a row
	allowed := false     // some check of this wait went through
	for {
		done, state, err := check(ctx)
		transient := err != nil && IsTransient(err)
		if transient {
			outage = time.Now()
		}
		denial := err != nil && (apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err))
		switch {
		case !denial:
			denied = time.Time{}
		case denied.IsZero():
			denied = time.Now()
		}
		restarting := denial && ((!outage.IsZero() && time.Since(outage) < restartGrace) ||
			(allowed && time.Since(denied) < restartGrace))
		if err == nil {
			allowed = true
		}
		switch {
		case transient || restarting: // or ctx's end, below
			failures++
			state = fmt.Sprintf("the API server failed %d times in a row, retrying", failures)
		case err != nil || done:
			return err
		default:
			failures = 0
		}
		if timeout > 0 && time.Now().After(deadline) {
			if failures > 0 {
				return fmt.Errorf("%s: %w after %s (%s; the last error: %w)", what, ErrTimeout, timeout, state, err)
			}
			if state != "" {
				state = " (" + state + ")"
			}
			return fmt.Errorf("%s: %w after %s%s", what, ErrTimeout, timeout, state)
		}
		wait := interval
		if failures > 0 {
			wait = min(interval<<min(failures-1, 16), maxBackoff(interval))
		}
		if timeout > 0 {
			wait = max(min(wait, time.Until(deadline)), time.Millisecond)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
