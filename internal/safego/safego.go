// Package safego runs goroutines whose panics become errors. A Go panic in
// a goroutine other than the one that recovers it ends the process with
// exit status 2, which a Kubernetes Job takes for a wrong command line; the
// pipelines run their workers through Group instead, so that a bug in one
// worker fails the operation with a *PanicError, the repository is left as
// after any other failure, and the CLI exits with its panic code.
package safego

import (
	"context"
	"fmt"
	"runtime/debug"

	"golang.org/x/sync/errgroup"
)

// PanicError is a panic recovered in a goroutine.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the goroutine's stack where it panicked
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("internal error (a bug; please report it): panic: %v", e.Value)
}

// Unwrap returns the panic value when it is an error (a runtime error, for
// one).
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Recover, deferred at the top of a goroutine, turns a panic into a
// *PanicError stored in *err.
func Recover(err *error) {
	if v := recover(); v != nil {
		*err = &PanicError{Value: v, Stack: debug.Stack()}
	}
}

// Group is an errgroup.Group whose goroutines' panics are returned by Wait
// as *PanicError, like any other error of the group (the first one cancels
// the group's context). Its methods are safe for concurrent use.
type Group struct{ g *errgroup.Group }

// WithContext returns a Group and a context cancelled when a goroutine of
// the group fails or panics, or when Wait returns.
func WithContext(ctx context.Context) (*Group, context.Context) {
	g, gctx := errgroup.WithContext(ctx)
	return &Group{g}, gctx
}

// Go runs f in a new goroutine (waiting first, if SetLimit's limit is
// reached).
func (g *Group) Go(f func() error) {
	g.g.Go(func() (err error) {
		defer Recover(&err)
		return f()
	})
}

// SetLimit bounds the goroutines running at once (n < 0: no bound).
func (g *Group) SetLimit(n int) { g.g.SetLimit(n) }

// Wait waits for every goroutine and returns the first error.
func (g *Group) Wait() error { return g.g.Wait() }

// Go runs f in a goroutine and calls done with f's error, or with a
// *PanicError if f panicked. done runs in that goroutine.
func Go(f func() error, done func(error)) {
	go func() {
		var err error
		defer func() { done(err) }()
		defer Recover(&err)
		err = f()
	}()
}
