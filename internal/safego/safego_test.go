package safego

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
)

func TestGroupPanicBecomesError(t *testing.T) {
	g, ctx := WithContext(context.Background())
	g.Go(func() error {
		var s []int
		_ = s[len(s)] // a runtime panic: index out of range
		return nil
	})
	g.Go(func() error { <-ctx.Done(); return ctx.Err() })
	err := g.Wait()
	var pe *PanicError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "panic: runtime error: index out of range") {
		t.Fatalf("Wait = %v, want a PanicError", err)
	}
	var re runtime.Error
	if !errors.As(err, &re) {
		t.Error("the runtime error is not reachable through Unwrap")
	}
	if !strings.Contains(string(pe.Stack), "safego_test.go") {
		t.Errorf("stack does not name the panicking function:\n%s", pe.Stack)
	}
}

func TestGroupPlainErrorAndLimit(t *testing.T) {
	g, _ := WithContext(context.Background())
	g.SetLimit(1)
	want := errors.New("x")
	g.Go(func() error { return want })
	g.Go(func() error { return nil })
	if err := g.Wait(); err != want {
		t.Fatalf("Wait = %v", err)
	}
}

func TestGo(t *testing.T) {
	got := make(chan error, 1)
	Go(func() error { panic("boom") }, func(err error) { got <- err })
	var pe *PanicError
	if err := <-got; !errors.As(err, &pe) || pe.Value != "boom" {
		t.Fatalf("done got %v", err)
	}
	Go(func() error { return nil }, func(err error) { got <- err })
	if err := <-got; err != nil {
		t.Fatalf("done got %v", err)
	}
}
