package backend_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/mem"
)

// pattern returns which of n sequential Stats fail.
func pattern(t *testing.T, f *backend.Faulty, n int) []bool {
	t.Helper()
	out := make([]bool, n)
	for i := range out {
		_, err := f.Stat(t.Context(), "config")
		var te *backend.TransientError
		out[i] = errors.As(err, &te)
		if !out[i] && !errors.Is(err, backend.ErrNotFound) {
			t.Fatalf("Stat: %v", err)
		}
	}
	return out
}

func TestFaultyRateAndSeed(t *testing.T) {
	const n = 10000
	opts := backend.FaultOptions{Seed: 1, ErrorRate: 0.3}
	f := backend.NewFaulty(mem.New(), opts)
	a := pattern(t, f, n)
	if calls, faults := f.Calls(backend.OpStat), f.Faults(backend.OpStat); calls != n || faults < 0.27*n || faults > 0.33*n {
		t.Errorf("%d calls, %d faults; want %d calls and about %d faults", calls, faults, n, int(0.3*n))
	}
	if b := pattern(t, backend.NewFaulty(mem.New(), opts), n); !slices.Equal(a, b) {
		t.Error("the same seed gave different faults")
	}
	opts.Seed = 2
	if c := pattern(t, backend.NewFaulty(mem.New(), opts), n); slices.Equal(a, c) {
		t.Error("different seeds gave the same faults")
	}
}

func TestFaultyOpErrorRate(t *testing.T) {
	f := backend.NewFaulty(mem.New(), backend.FaultOptions{
		ErrorRate:   1,
		OpErrorRate: map[backend.Op]float64{backend.OpPut: 0, backend.OpGet: 7 /* clamped to 1 */},
	})
	ctx := t.Context()
	if err := f.Put(ctx, "config", []byte("x")); err != nil {
		t.Errorf("Put with rate 0: %v", err)
	}
	if _, err := f.Get(ctx, "config", 0, -1); err == nil {
		t.Error("Get with rate 1 succeeded")
	}
	var te *backend.TransientError
	if err := f.Delete(ctx, "config"); !errors.As(err, &te) || te.Op != backend.OpDelete || te.Key != "config" {
		t.Errorf("Delete with the default rate 1: %v", err)
	}
	f.SetEnabled(false)
	if err := f.Delete(ctx, "config"); err != nil {
		t.Errorf("Delete with faults disabled: %v", err)
	}
}

func TestFaultyFailAfterPuts(t *testing.T) {
	m := mem.New()
	f := backend.NewFaulty(m, backend.FaultOptions{FailAfterPuts: 3})
	ctx := t.Context()
	for i := range 5 {
		key := fmt.Sprintf("data/ab/%d", i)
		err := f.Put(ctx, key, []byte("x"))
		if i < 3 && err != nil {
			t.Errorf("Put %d: %v", i, err)
		}
		if i >= 3 {
			if !errors.Is(err, backend.ErrPermanent) {
				t.Errorf("Put %d: %v, want ErrPermanent", i, err)
			}
			if _, err := m.Stat(ctx, key); !errors.Is(err, backend.ErrNotFound) {
				t.Errorf("Put %d stored the object: %v", i, err)
			}
		}
	}
	if f.Calls(backend.OpPut) != 5 || f.Faults(backend.OpPut) != 2 {
		t.Errorf("%d calls, %d faults; want 5 and 2", f.Calls(backend.OpPut), f.Faults(backend.OpPut))
	}
}

func TestFaultyAfterPut(t *testing.T) {
	m := mem.New()
	f := backend.NewFaulty(m, backend.FaultOptions{AfterPutErrorRate: 1})
	err := f.Put(t.Context(), "config", []byte("x"))
	var te *backend.TransientError
	if !errors.As(err, &te) || !te.Landed {
		t.Fatalf("Put: %v, want a landed TransientError", err)
	}
	if _, err := m.Stat(t.Context(), "config"); err != nil {
		t.Errorf("the object did not land: %v", err)
	}
}

func TestFaultyListFault(t *testing.T) {
	ctx := t.Context()
	m := mem.New()
	for i := range 10 {
		if err := m.Put(ctx, fmt.Sprintf("data/ab/%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for seed := range uint64(20) {
		f := backend.NewFaulty(m, backend.FaultOptions{Seed: seed, OpErrorRate: map[backend.Op]float64{backend.OpList: 1}})
		n := 0
		err := f.List(ctx, "", func(backend.ObjectInfo) error { n++; return nil })
		var te *backend.TransientError
		if !errors.As(err, &te) || n > 2 {
			t.Errorf("seed %d: List delivered %d objects, then %v; want at most 2, then a TransientError", seed, n, err)
		}
	}
}

func TestFaultyStallHonoursContext(t *testing.T) {
	f := backend.NewFaulty(mem.New(), backend.FaultOptions{StallRate: 1, MaxStall: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := f.Stat(ctx, "config"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stat: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stall ignored the context for %v", d)
	}
}

func TestFaultyGetBody(t *testing.T) {
	ctx := t.Context()
	m := mem.New()
	if err := m.Put(ctx, "config", make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	f := backend.NewFaulty(m, backend.FaultOptions{GetBodyErrorRate: 1})
	for range 20 {
		got, err := backend.ReadAll(ctx, f, "config", 10, 50)
		var te *backend.TransientError
		if !errors.As(err, &te) || !te.Body || len(got) != 0 {
			t.Fatalf("ReadAll: %d bytes, %v; want a body TransientError", len(got), err)
		}
	}
	if f.Faults(backend.OpGet) != 20 {
		t.Errorf("%d faults, want 20", f.Faults(backend.OpGet))
	}
}
