package backend_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/blockmover/blockmover/repo/backend/mem"
	"github.com/blockmover/blockmover/repo/backendtest"
)

// TestObserveConformance: observing changes nothing a caller sees.
func TestObserveConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return backend.NewObserve(mem.New(), func(backend.RequestEvent) {})
	})
}

// TestObserveTempCleaner: an observed fs backend still cleans temporary
// files (gc relies on it), an observed mem backend does not pretend to.
func TestObserveTempCleaner(t *testing.T) {
	be, err := fs.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if _, ok := backend.NewObserve(be, func(backend.RequestEvent) {}).(backend.TempCleaner); !ok {
		t.Error("Observe(fs) is no TempCleaner")
	}
	if _, ok := backend.NewObserve(mem.New(), func(backend.RequestEvent) {}).(backend.TempCleaner); ok {
		t.Error("Observe(mem) is a TempCleaner")
	}
}

// eventLog records request events.
type eventLog struct {
	mu     sync.Mutex
	events []backend.RequestEvent
}

func (l *eventLog) add(e backend.RequestEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// count returns the events of op, and how many of them failed.
func (l *eventLog) count(op backend.Op) (n, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Op == op {
			n++
			if e.Err != nil {
				failed++
			}
		}
	}
	return n, failed
}

// TestObserveUnderRetry: Retry(Observe(faulty)) reports every attempt as a
// request, the failed ones with their error, while OnRetry sees each retry
// and the caller sees success; a Get is reported at Close with the error
// that broke its body.
func TestObserveUnderRetry(t *testing.T) {
	ctx := context.Background()
	f := backend.NewFaulty(mem.New(), backend.FaultOptions{Seed: 3, OpErrorRate: map[backend.Op]float64{backend.OpPut: 0.5}})
	var log eventLog
	var retries sync.Map // attempt counts per op
	opts := fastRetry(3)
	opts.OnRetry = func(e backend.RetryEvent) {
		n, _ := retries.LoadOrStore(e.Op, new(int))
		*n.(*int)++
	}
	be := backend.NewRetry(backend.NewObserve(f, log.add), opts)
	for _, k := range []string{"data/aa/aa01", "data/aa/aa02", "data/aa/aa03", "data/aa/aa04", "data/aa/aa05", "data/aa/aa06"} {
		if err := be.Put(ctx, k, []byte("content")); err != nil {
			t.Fatal(err)
		}
	}
	puts, failed := log.count(backend.OpPut)
	injected := f.Faults(backend.OpPut)
	var retried int
	if n, ok := retries.Load(backend.OpPut); ok {
		retried = *n.(*int)
	}
	if failed != int(injected) || puts != 6+failed || retried != failed || failed == 0 {
		t.Errorf("%d put events, %d failed; %d faults injected, %d retries (want 6 + failures, failures = faults = retries > 0)", puts, failed, injected, retried)
	}

	rc, err := be.Get(ctx, "data/aa/aa01", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := log.count(backend.OpGet); n != 0 {
		t.Errorf("a Get reported before its reader is closed")
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	rc.Close()
	if n, failed := log.count(backend.OpGet); n != 1 || failed != 0 {
		t.Errorf("one closed Get: %d events, %d failed", n, failed)
	}
	if _, err := be.Stat(ctx, "data/aa/missing"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatal(err)
	}
	log.mu.Lock()
	last := log.events[len(log.events)-1]
	log.mu.Unlock()
	if last.Op != backend.OpStat || last.Key != "data/aa/missing" || !errors.Is(last.Err, backend.ErrNotFound) {
		t.Errorf("stat of a missing key reported as %+v", last)
	}

	// A body that breaks is reported with its error.
	broken := backend.NewFaulty(mem.New(), backend.FaultOptions{Seed: 1, GetBodyErrorRate: 1})
	broken.Put(ctx, "k", make([]byte, 1<<17))
	var blog eventLog
	rc, err = backend.NewObserve(broken, blog.add).Get(ctx, "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	_, rerr := io.Copy(io.Discard, rc)
	rc.Close()
	if n, failed := blog.count(backend.OpGet); rerr == nil || n != 1 || failed != 1 {
		t.Errorf("broken body (read error %v): %d events, %d failed", rerr, n, failed)
	}
}
