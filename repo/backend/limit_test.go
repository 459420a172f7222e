package backend_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/mem"
)

// gauge is a real backend that records how many Stat and Put calls run at
// once; each call takes a little while.
type gauge struct {
	backend.Backend
	now, peak atomic.Int32
}

func (g *gauge) enter() {
	n := g.now.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(2 * time.Millisecond) // a slow server, in a test double
}

func (g *gauge) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	g.enter()
	defer g.now.Add(-1)
	return g.Backend.Stat(ctx, key)
}

func (g *gauge) Put(ctx context.Context, key string, data []byte) error {
	g.enter()
	defer g.now.Add(-1)
	return g.Backend.Put(ctx, key, data)
}

func TestLimitConcurrency(t *testing.T) {
	for _, n := range []int{-1, 0, 1, 3} {
		g := &gauge{Backend: mem.New()}
		l := backend.NewLimit(g, n)
		var wg sync.WaitGroup
		for i := range 24 {
			wg.Go(func() {
				if i%2 == 0 {
					l.Stat(t.Context(), "config")
				} else {
					l.Put(t.Context(), "config", nil)
				}
			})
		}
		wg.Wait()
		if want := int32(max(n, 1)); g.peak.Load() != want {
			t.Errorf("NewLimit(%d): %d calls at once, want %d", n, g.peak.Load(), want)
		}
	}
}

func TestLimitGetHoldsSlot(t *testing.T) {
	ctx := t.Context()
	m := mem.New()
	if err := m.Put(ctx, "config", []byte("x")); err != nil {
		t.Fatal(err)
	}
	l := backend.NewLimit(m, 1)
	rc, err := l.Get(ctx, "config", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := l.Stat(short, "config"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stat while a reader is open: %v, want DeadlineExceeded", err)
	}
	if _, err := io.ReadAll(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	rc.Close() // a second Close must not free a second slot
	if _, err := l.Stat(ctx, "config"); err != nil {
		t.Fatalf("Stat after Close: %v", err)
	}

	// Exactly one slot is free: hold it and check that no other exists.
	rc, err = l.Get(ctx, "config", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	short, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := l.Stat(short, "config"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("double Close freed a second slot: Stat = %v", err)
	}
}

func TestLimitFailedGetReleases(t *testing.T) {
	l := backend.NewLimit(mem.New(), 1)
	for range 3 {
		if _, err := l.Get(t.Context(), "missing", 0, -1); !errors.Is(err, backend.ErrNotFound) {
			t.Fatalf("Get: %v", err)
		}
	}
}

func TestLimitDoneContext(t *testing.T) {
	l := backend.NewLimit(mem.New(), 4)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	// A free slot must not win over a cancelled context.
	for range 20 {
		if err := l.Put(ctx, "config", nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("Put: %v, want Canceled", err)
		}
	}
}
