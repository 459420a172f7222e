package backend_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/blockmover/blockmover/repo/backend/mem"
	"github.com/blockmover/blockmover/repo/backendtest"
)

// fastRetry retries often and quickly, so that a 30% fault rate never
// exhausts the attempts (0.3^30 per call).
func fastRetry(seed uint64) backend.RetryOptions {
	return backend.RetryOptions{
		MaxAttempts:  30,
		InitialDelay: time.Microsecond,
		MaxDelay:     100 * time.Microsecond,
		Rand:         rand.NewPCG(seed, 0),
	}
}

// TestRetryFaultyConformance: behind Retry, a backend failing 30% of calls
// (and losing 10% of Put replies after storing) is indistinguishable from a
// healthy one.
func TestRetryFaultyConformance(t *testing.T) {
	var mu sync.Mutex
	var faulties []*backend.Faulty
	var seed uint64
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		mu.Lock()
		defer mu.Unlock()
		seed++
		f := backend.NewFaulty(mem.New(), backend.FaultOptions{
			Seed:              seed,
			ErrorRate:         0.3,
			AfterPutErrorRate: 0.1,
			StallRate:         0.05,
			MaxStall:          200 * time.Microsecond,
		})
		faulties = append(faulties, f)
		return backend.NewRetry(f, fastRetry(seed))
	})
	var faults [5]int64
	for _, f := range faulties {
		for op := range backend.OpDelete + 1 {
			faults[op] += f.Faults(op)
		}
	}
	for op, n := range faults {
		if n == 0 {
			t.Errorf("no faults injected into %v", backend.Op(op))
		}
	}
	t.Logf("faults injected: put %d, get %d, stat %d, list %d, delete %d", faults[0], faults[1], faults[2], faults[3], faults[4])
}

// TestWrapperStacksConformance: the wrappers compose, in either order and
// over either backend.
func TestWrapperStacksConformance(t *testing.T) {
	faulty := func(be backend.Backend) backend.Backend {
		return backend.NewFaulty(be, backend.FaultOptions{Seed: 7, ErrorRate: 0.3, AfterPutErrorRate: 0.1})
	}
	newFS := func(t *testing.T) backend.Backend {
		be, err := fs.Create(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return be
	}
	for name, newBackend := range map[string]func(t *testing.T) backend.Backend{
		"Limit1(mem)": func(*testing.T) backend.Backend { return backend.NewLimit(mem.New(), 1) },
		"Limit(Retry(Faulty(fs)))": func(t *testing.T) backend.Backend {
			return backend.NewLimit(backend.NewRetry(faulty(newFS(t)), fastRetry(1)), 4)
		},
		"Retry(Limit1(Faulty(fs)))": func(t *testing.T) backend.Backend {
			return backend.NewRetry(backend.NewLimit(faulty(newFS(t)), 1), fastRetry(2))
		},
		"Faulty(mem) without faults": func(*testing.T) backend.Backend {
			return backend.NewFaulty(mem.New(), backend.FaultOptions{})
		},
	} {
		t.Run(name, func(t *testing.T) { backendtest.Run(t, newBackend) })
	}
}

// failing is a real backend whose Stat always fails with err.
type failing struct {
	backend.Backend
	err   error
	calls atomic.Int32
}

func (b *failing) Stat(context.Context, string) (backend.ObjectInfo, error) {
	b.calls.Add(1)
	return backend.ObjectInfo{}, b.err
}

func TestRetryClassifies(t *testing.T) {
	transient := errors.New("connection reset")
	for _, c := range []struct {
		err     error
		retried bool
	}{
		{fmt.Errorf("x: %w", backend.ErrNotFound), false},
		{fmt.Errorf("x: %w", backend.ErrExists), false},
		{fmt.Errorf("x: %w", backend.ErrInvalidRange), false},
		{fmt.Errorf("x: %w", backend.ErrInvalidKey), false},
		{fmt.Errorf("x: %w", backend.ErrPermanent), false},
		{fmt.Errorf("x: %w", context.Canceled), false},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{transient, true},
		{&backend.TransientError{Op: backend.OpStat, Key: "k"}, true},
	} {
		be := &failing{Backend: mem.New(), err: c.err}
		r := backend.NewRetry(be, fastRetry(1))
		_, err := r.Stat(t.Context(), "k")
		if !errors.Is(err, c.err) {
			t.Errorf("%v: Stat returned %v, which does not wrap it", c.err, err)
		}
		want := int32(1)
		if c.retried {
			want = 30
		}
		if n := be.calls.Load(); n != want {
			t.Errorf("%v: %d attempts, want %d", c.err, n, want)
		}
	}
}

func TestRetryBackoff(t *testing.T) {
	delays := func() []time.Duration {
		var events []backend.RetryEvent
		be := &failing{Backend: mem.New(), err: errors.New("flaky")}
		r := backend.NewRetry(be, backend.RetryOptions{
			MaxAttempts:  8,
			InitialDelay: 100 * time.Microsecond,
			MaxDelay:     400 * time.Microsecond,
			Rand:         rand.NewPCG(42, 42),
			OnRetry:      func(e backend.RetryEvent) { events = append(events, e) },
		})
		if _, err := r.Stat(t.Context(), "k"); err == nil {
			t.Fatal("Stat succeeded")
		}
		if len(events) != 7 {
			t.Fatalf("%d retry events, want 7", len(events))
		}
		var ds []time.Duration
		for i, e := range events {
			bound := min(100*time.Microsecond<<i, 400*time.Microsecond)
			if e.Attempt != i+1 || e.Op != backend.OpStat || e.Key != "k" || e.Err == nil {
				t.Errorf("event %d: %+v", i, e)
			}
			if e.Delay < 0 || e.Delay > bound {
				t.Errorf("event %d: delay %v outside [0, %v]", i, e.Delay, bound)
			}
			ds = append(ds, e.Delay)
		}
		return ds
	}
	first, second := delays(), delays()
	if !slices.Equal(first, second) {
		t.Errorf("seeded delays differ: %v vs %v", first, second)
	}
}

func TestRetryWaitHonoursContext(t *testing.T) {
	for _, c := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(20*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(t.Context(), 20*time.Millisecond)
		}, context.DeadlineExceeded},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := c.ctx()
			defer cancel()
			be := &failing{Backend: mem.New(), err: errors.New("flaky")}
			r := backend.NewRetry(be, backend.RetryOptions{InitialDelay: time.Hour, MaxDelay: time.Hour, Rand: rand.NewPCG(1, 1)})
			start := time.Now()
			_, err := r.Stat(ctx, "k")
			if !errors.Is(err, c.want) {
				t.Errorf("Stat: %v, want %v", err, c.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Stat took %v after the context ended", d)
			}
		})
	}
}

func TestRetryPut(t *testing.T) {
	ctx := t.Context()
	const key = "data/ab/k"
	data := []byte("0123456789")
	for _, c := range []struct {
		name     string
		existing []byte // stored before the Put, if not nil
		opts     backend.FaultOptions
		want     error
		stored   []byte
	}{
		{"first attempt fails, retry stores", nil,
			backend.FaultOptions{OpErrorRate: map[backend.Op]float64{backend.OpPut: 1}}, nil, data},
		{"reply lost, retry finds own object", nil,
			backend.FaultOptions{AfterPutErrorRate: 1}, nil, data},
		{"first attempt fails, retry finds an object of the same size", []byte("abcdefghij"),
			backend.FaultOptions{OpErrorRate: map[backend.Op]float64{backend.OpPut: 1}}, nil, []byte("abcdefghij")},
		{"first attempt fails, retry finds an object of another size", []byte("other"),
			backend.FaultOptions{OpErrorRate: map[backend.Op]float64{backend.OpPut: 1}}, backend.ErrExists, []byte("other")},
		{"first attempt finds the object", data,
			backend.FaultOptions{}, backend.ErrExists, data},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mem.New()
			if c.existing != nil {
				if err := m.Put(ctx, key, c.existing); err != nil {
					t.Fatal(err)
				}
			}
			f := backend.NewFaulty(m, c.opts)
			opts := fastRetry(1)
			// One fault, then a healthy backend.
			opts.OnRetry = func(backend.RetryEvent) { f.SetEnabled(false) }
			err := backend.NewRetry(f, opts).Put(ctx, key, data)
			if (c.want == nil && err != nil) || !errors.Is(err, c.want) {
				t.Errorf("Put: %v, want %v", err, c.want)
			}
			if got, err := backend.ReadAll(ctx, m, key, 0, -1); err != nil || string(got) != string(c.stored) {
				t.Errorf("stored %q, %v; want %q", got, err, c.stored)
			}
			if c.want == nil && c.existing == nil && f.Faults(backend.OpPut) != 1 {
				t.Errorf("%d faults, want 1", f.Faults(backend.OpPut))
			}
		})
	}
}

func TestRetryPermanentNotRetried(t *testing.T) {
	f := backend.NewFaulty(mem.New(), backend.FaultOptions{FailAfterPuts: 2})
	r := backend.NewRetry(f, fastRetry(1))
	ctx := t.Context()
	for i := range 2 {
		if err := r.Put(ctx, fmt.Sprintf("data/ab/%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Put(ctx, "data/ab/2", []byte("x")); !errors.Is(err, backend.ErrPermanent) {
		t.Fatalf("third Put: %v, want ErrPermanent", err)
	}
	if n := f.Calls(backend.OpPut); n != 3 {
		t.Errorf("%d Put calls reached Faulty, want 3 (no retry of a permanent error)", n)
	}
}

// TestRetryListRestarts: listings that fail part-way are restarted, and fn
// still sees every object exactly once.
func TestRetryListRestarts(t *testing.T) {
	ctx := t.Context()
	m := mem.New()
	want := make([]string, 50)
	for i := range want {
		want[i] = fmt.Sprintf("data/%02x/%d", i%4, i)
		if err := m.Put(ctx, want[i], []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(want)
	var faults int64
	for seed := range uint64(10) {
		f := backend.NewFaulty(m, backend.FaultOptions{Seed: seed, OpErrorRate: map[backend.Op]float64{backend.OpList: 0.5}})
		var got []string
		err := backend.NewRetry(f, fastRetry(seed)).List(ctx, "data/", func(fi backend.ObjectInfo) error {
			got = append(got, fi.Key)
			return nil
		})
		if err != nil {
			t.Fatalf("seed %d: List: %v", seed, err)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d: listed %d keys %q, want %d", seed, len(got), got, len(want))
		}
		faults += f.Faults(backend.OpList)
	}
	if faults == 0 {
		t.Error("no List faults injected")
	}
}

// TestRetryGetBodyResumes: a body that breaks mid-read is resumed with a
// ranged Get from where it stopped, and the caller reads the whole object.
func TestRetryGetBodyResumes(t *testing.T) {
	ctx := t.Context()
	m := mem.New()
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	if err := m.Put(ctx, "data/ab/k", want); err != nil {
		t.Fatal(err)
	}
	f := backend.NewFaulty(m, backend.FaultOptions{Seed: 3, GetBodyErrorRate: 0.5})
	for _, rng := range [][2]int64{{0, -1}, {100, 500_000}, {1 << 19, -1}} {
		rc, err := backend.NewRetry(f, backend.RetryOptions{MaxAttempts: 50, InitialDelay: time.Microsecond}).Get(ctx, "data/ab/k", rng[0], rng[1])
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("range %v: %v", rng, err)
		}
		end := int64(len(want))
		if rng[1] >= 0 {
			end = rng[0] + rng[1]
		}
		if !bytes.Equal(got, want[rng[0]:end]) {
			t.Fatalf("range %v: resumed body differs (%d bytes)", rng, len(got))
		}
	}
	if f.Faults(backend.OpGet) == 0 {
		t.Fatal("no body faults were injected")
	}
	// Without retries the body error reaches the caller.
	rc, err := backend.NewRetry(backend.NewFaulty(m, backend.FaultOptions{GetBodyErrorRate: 1}), backend.RetryOptions{MaxAttempts: 1}).Get(ctx, "data/ab/k", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	var te *backend.TransientError
	if !errors.As(err, &te) || !te.Body {
		t.Errorf("reading the body without retries: %v, want a body TransientError", err)
	}
}

// cancelling is a real backend whose Stat cancels the caller's context and
// then fails with an unrelated error, as a connection torn down by the
// cancellation might.
type cancelling struct {
	backend.Backend
	cancel context.CancelFunc
}

func (b cancelling) Stat(context.Context, string) (backend.ObjectInfo, error) {
	b.cancel()
	return backend.ObjectInfo{}, errors.New("connection closed")
}

func TestRetryContextEndsDuringAttempt(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r := backend.NewRetry(cancelling{mem.New(), cancel}, fastRetry(1))
	_, err := r.Stat(ctx, "k")
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "connection closed") {
		t.Errorf("Stat: %v, want Canceled and the attempt's error", err)
	}
}

// TestRetryCall: a call outside a Backend gets the same policy: transient
// errors are retried until success or the last attempt, permanent ones
// are not.
func TestRetryCall(t *testing.T) {
	transient := errors.New("connection refused")
	for _, tc := range []struct {
		name      string
		failures  int   // calls that fail before one succeeds
		err       error // what they fail with
		attempts  int
		wantCalls int
		wantErr   error
	}{
		{"succeeds after transient failures", 3, transient, 5, 4, nil},
		{"gives up after the last attempt", 10, transient, 5, 5, transient},
		{"permanent error is not retried", 10, backend.ErrPermanent, 5, 1, backend.ErrPermanent},
		{"not found is not retried", 10, backend.ErrNotFound, 5, 1, backend.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := fastRetry(1)
			opts.MaxAttempts = tc.attempts
			calls := 0
			err := backend.RetryCall(t.Context(), opts, backend.OpStat, "s3://bucket", func(context.Context) error {
				calls++
				if calls <= tc.failures {
					return tc.err
				}
				return nil
			})
			if calls != tc.wantCalls {
				t.Errorf("%d calls, want %d", calls, tc.wantCalls)
			}
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want %v", err, tc.wantErr)
			}
		})
	}
}
