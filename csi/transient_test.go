package csi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestIsTransient: the API server unreachable, restarting, overloaded or
// failing inside is transient; an answer about the request is not.
func TestIsTransient(t *testing.T) {
	jobs := schema.GroupResource{Group: "batch", Resource: "jobs"}
	refused := &url.Error{Op: "Get", URL: "https://127.0.0.1:6443/apis/batch/v1/namespaces/x/jobs/y",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", refused, true},
		{"connection refused, wrapped", fmt.Errorf("mover Job x/y: %w", refused), true},
		{"unexpected EOF", &url.Error{Op: "Get", URL: "u", Err: io.ErrUnexpectedEOF}, true},
		{"503", apierrors.NewServiceUnavailable("restarting"), true},
		{"500", apierrors.NewInternalError(errors.New("etcd")), true},
		{"504 server timeout", apierrors.NewServerTimeout(jobs, "get", 1), true},
		{"429", apierrors.NewTooManyRequests("slow down", 1), true},
		{"request timeout", apierrors.NewTimeoutError("took too long", 1), true},
		{"client timeout", &url.Error{Op: "Get", URL: "u", Err: context.DeadlineExceeded}, true},
		{"forbidden", apierrors.NewForbidden(jobs, "y", errors.New("RBAC")), false},
		{"not found", apierrors.NewNotFound(jobs, "y"), false},
		{"unauthorized", apierrors.NewUnauthorized("token"), false},
		{"conflict", apierrors.NewConflict(jobs, "y", errors.New("changed")), false},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), false},
		{"other", errors.New("termination message is not JSON"), false},
		{"nil", nil, false},
	} {
		if got := IsTransient(c.err); got != c.want {
			t.Errorf("%s: IsTransient(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// TestPollRetries: poll retries transient errors, and a Forbidden right
// after one (an API server whose authorizer is catching up), until the
// check succeeds, as does a Forbidden after a check of the wait went
// through; a Forbidden without either before it, or any other
// error, ends the wait at once; a wait that times out while the API
// server fails says so and wraps both ErrTimeout and the last error.
func TestPollRetries(t *testing.T) {
	ctx := context.Background()
	jobs := schema.GroupResource{Group: "batch", Resource: "jobs"}
	refused := fmt.Errorf("mover Job x/y: %w", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	forbidden := fmt.Errorf("mover Job x/y: %w", apierrors.NewForbidden(jobs, "y", errors.New(`clusterrole "blockmover-orchestrator" not found`)))
	seq := func(errs ...error) (func(context.Context) (bool, string, error), *int) {
		calls := 0
		return func(context.Context) (bool, string, error) {
			calls++
			if calls <= len(errs) {
				return false, "", errs[calls-1]
			}
			return true, "", nil
		}, &calls
	}

	check, calls := seq(refused, refused, apierrors.NewServiceUnavailable("starting"), forbidden, forbidden)
	if err := poll(ctx, time.Millisecond, time.Minute, "w", check); err != nil || *calls != 6 {
		t.Errorf("an outage and a restart: %v after %d calls, want success after 6", err, *calls)
	}
	// A restart between two checks, unseen: the first went through, and
	// the same identity is denied for a moment.
	check, calls = seq(nil, forbidden, forbidden)
	if err := poll(ctx, time.Millisecond, time.Minute, "w", check); err != nil || *calls != 4 {
		t.Errorf("a restart between two checks: %v after %d calls, want success after 4", err, *calls)
	}
	check, calls = seq(forbidden)
	if err := poll(ctx, time.Millisecond, time.Minute, "w", check); !apierrors.IsForbidden(err) || *calls != 1 {
		t.Errorf("forbidden: %v after %d calls, want it at once", err, *calls)
	}
	check, calls = seq(apierrors.NewNotFound(jobs, "y"))
	if err := poll(ctx, time.Millisecond, time.Minute, "w", check); !apierrors.IsNotFound(err) || *calls != 1 {
		t.Errorf("not found: %v after %d calls, want it at once", err, *calls)
	}
	down := func(context.Context) (bool, string, error) { return false, "", refused }
	err := poll(ctx, time.Millisecond, 50*time.Millisecond, "mover Job x/y not finished", down)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a wait that timed out during an outage: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := poll(cctx, time.Millisecond, time.Minute, "w", down); !errors.Is(err, context.Canceled) {
		t.Errorf("a wait whose context ended during an outage: %v", err)
	}
}

// TestMaxBackoff: retries back off up to 15 intervals, at most 30 s, never
// less than one interval.
func TestMaxBackoff(t *testing.T) {
	for _, c := range []struct{ interval, want time.Duration }{
		{200 * time.Millisecond, 3 * time.Second},
		{2 * time.Second, 30 * time.Second},
		{time.Minute, time.Minute},
	} {
		if got := maxBackoff(c.interval); got != c.want {
			t.Errorf("maxBackoff(%s) = %s, want %s", c.interval, got, c.want)
		}
	}
}
