package backendtest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	iofs "io/fs"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/mem"
	"github.com/blockmover/blockmover/repo/backendtest"
)

// Mutants are in-memory backends with one deliberate bug each. The suite
// must fail on every one of them, in the subtests listed.

// overwriting replaces existing objects.
type overwriting struct{ *mem.Backend }

func (b overwriting) Put(ctx context.Context, key string, data []byte) error {
	_ = b.Backend.Delete(ctx, key)
	return b.Backend.Put(ctx, key, data)
}

// swallowing treats a SkipDir or SkipAll from fn as a normal end, as a
// careless filepath.WalkDir does.
type swallowing struct{ *mem.Backend }

func (b swallowing) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	err := b.Backend.List(ctx, prefix, fn)
	if errors.Is(err, iofs.SkipDir) || errors.Is(err, iofs.SkipAll) {
		return nil
	}
	return err
}

// strictEnd refuses the empty range at the end of an object.
type strictEnd struct{ *mem.Backend }

func (b strictEnd) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if fi, err := b.Backend.Stat(ctx, key); err == nil && offset == fi.Size && offset > 0 {
		return nil, backend.ErrInvalidRange
	}
	return b.Backend.Get(ctx, key, offset, length)
}

// plainNotFound reports a missing key without ErrNotFound.
type plainNotFound struct{ *mem.Backend }

func (b plainNotFound) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	fi, err := b.Backend.Stat(ctx, key)
	if errors.Is(err, backend.ErrNotFound) {
		return fi, errors.New("no such object")
	}
	return fi, err
}

// retaining stores the caller's buffer.
type retaining struct {
	*mem.Backend
	mu   sync.Mutex
	bufs map[string][]byte
}

func (b *retaining) Put(ctx context.Context, key string, data []byte) error {
	if err := b.Backend.Put(ctx, key, data); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bufs[key] = data
	return nil
}

func (b *retaining) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rc, err := b.Backend.Get(ctx, key, offset, length)
	if err != nil {
		return nil, err
	}
	rc.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	data := b.bufs[key]
	if length < 0 {
		length = int64(len(data)) - offset
	}
	return io.NopCloser(bytes.NewReader(data[offset : offset+length])), nil
}

// ignoringContext forgets that the context may be done.
type ignoringContext struct{ *mem.Backend }

func (b ignoringContext) Put(_ context.Context, key string, data []byte) error {
	return b.Backend.Put(context.Background(), key, data)
}

// halfVisible makes the first half of an object visible before the rest.
// A put of a key that readers poll for (at least pollers reads found it
// absent) leaves the half in place until one of them has read it (10 s at
// most, should none read again); other puts, for 20 ms. Whether the suite
// catches it then depends on the order of events (AtomicVisibility's four
// readers each look before the put), not on a reader being scheduled
// within the 20 ms, which a loaded machine missed.
type halfVisible struct {
	*mem.Backend
	mu     sync.Mutex
	absent map[string]int           // key → the reads that found it absent
	half   map[string]chan struct{} // keys being put → closed when a read got the half
}

// pollers is how many reads finding a key absent make it polled: more than
// a sequential test makes before it puts the key (Delete: two).
const pollers = 4

func newHalfVisible() *halfVisible {
	return &halfVisible{Backend: mem.New(), absent: map[string]int{}, half: map[string]chan struct{}{}}
}

func (b *halfVisible) Put(ctx context.Context, key string, data []byte) error {
	read := make(chan struct{}) // stays open for a put beside another of key
	b.mu.Lock()
	hold := 20 * time.Millisecond
	if b.absent[key] >= pollers {
		hold = 10 * time.Second
	}
	if _, busy := b.half[key]; !busy {
		b.half[key] = read
	}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		if b.half[key] == read {
			delete(b.half, key)
		}
		b.mu.Unlock()
	}()
	if err := b.Backend.Put(ctx, key, data[:len(data)/2]); err != nil {
		return err
	}
	t := time.NewTimer(hold)
	select {
	case <-read:
	case <-t.C:
	}
	t.Stop()
	_ = b.Backend.Delete(ctx, key)
	return b.Backend.Put(ctx, key, data)
}

// looked records a read of key that returned err.
func (b *halfVisible) looked(key string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ch, putting := b.half[key]; {
	case errors.Is(err, backend.ErrNotFound):
		b.absent[key]++
	case err == nil && putting:
		close(ch) // the half was read
		delete(b.half, key)
	}
}

func (b *halfVisible) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	fi, err := b.Backend.Stat(ctx, key)
	b.looked(key, err)
	return fi, err
}

func (b *halfVisible) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rc, err := b.Backend.Get(ctx, key, offset, length)
	b.looked(key, err)
	return rc, err
}

// duplicating lists every object twice.
type duplicating struct{ *mem.Backend }

func (b duplicating) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	return b.Backend.List(ctx, prefix, func(fi backend.ObjectInfo) error {
		if err := fn(fi); err != nil {
			return err
		}
		return fn(fi)
	})
}

// lenientKeys accepts keys with "..".
type lenientKeys struct{ *mem.Backend }

func (b lenientKeys) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	if strings.Contains(key, "..") {
		return backend.ObjectInfo{}, backend.ErrNotFound
	}
	return b.Backend.Stat(ctx, key)
}

// mutants maps each mutant to its constructor and to subtests that
// must fail on it.
func mutants() map[string]struct {
	make func() backend.Backend
	fail []string
} {
	type m = struct {
		make func() backend.Backend
		fail []string
	}
	return map[string]m{
		"overwriting":     {func() backend.Backend { return overwriting{mem.New()} }, []string{"PutExisting", "ConcurrentPutSameKey"}},
		"swallowing":      {func() backend.Backend { return swallowing{mem.New()} }, []string{"ListStop"}},
		"strictEnd":       {func() backend.Backend { return strictEnd{mem.New()} }, []string{"GetRange"}},
		"plainNotFound":   {func() backend.Backend { return plainNotFound{mem.New()} }, []string{"Missing", "Delete", "Empty"}},
		"retaining":       {func() backend.Backend { return &retaining{Backend: mem.New(), bufs: map[string][]byte{}} }, []string{"PutDoesNotRetain"}},
		"ignoringContext": {func() backend.Backend { return ignoringContext{mem.New()} }, []string{"ContextDone"}},
		"halfVisible":     {func() backend.Backend { return newHalfVisible() }, []string{"AtomicVisibility"}},
		"duplicating":     {func() backend.Backend { return duplicating{mem.New()} }, []string{"List", "ListCallbackUsesBackend"}},
		"lenientKeys":     {func() backend.Backend { return lenientKeys{mem.New()} }, []string{"InvalidKeys"}},
	}
}

const mutantEnv = "BACKENDTEST_MUTANT"

// TestMutant runs the suite on the mutant named by $BACKENDTEST_MUTANT; it
// is meant to fail and only runs as a child of TestSuiteCatchesMutants.
func TestMutant(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		t.Skip("run by TestSuiteCatchesMutants")
	}
	m, ok := mutants()[name]
	if !ok {
		t.Fatalf("unknown mutant %q", name)
	}
	backendtest.Run(t, func(t *testing.T) backend.Backend { return m.make() })
}

func TestSuiteCatchesMutants(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the test binary once per mutant")
	}
	for name, m := range mutants() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestMutant$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), mutantEnv+"="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a backend that is %s", name)
			}
			for _, sub := range m.fail {
				if !strings.Contains(string(out), "--- FAIL: TestMutant/"+sub+" ") {
					t.Errorf("subtest %s did not fail; output:\n%s", sub, out)
				}
			}
		})
	}
}

// The healthy backend passes, as a control.
func TestMem(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return mem.New() })
}
