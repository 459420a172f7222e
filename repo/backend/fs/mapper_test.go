//go:build unix

package fs_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/mem"
)

// TestMapRange: a mapped range holds the bytes Get returns, at any offset
// (page-aligned or not), through the wrappers a repository uses; it stays
// readable after the object is deleted; missing objects and bad ranges are
// Get's errors; a backend that cannot map, and a wrapper of one, say
// errors.ErrUnsupported.
func TestMapRange(t *testing.T) {
	ctx := context.Background()
	fsb := newBackend(t)
	var events int
	be := backend.NewRetry(backend.NewLimit(backend.NewObserve(fsb, func(backend.RequestEvent) { events++ }), 1), backend.RetryOptions{MaxAttempts: 2})
	data := make([]byte, 3*os.Getpagesize()+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	const key = "data/ab/abcd"
	if err := be.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	events = 0
	for _, r := range [][2]int64{{0, int64(len(data))}, {1, 10}, {4095, 2}, {4096, 4096}, {5000, int64(len(data)) - 5000}} {
		got, unmap, err := backend.MapRange(ctx, be, key, r[0], r[1])
		if err != nil {
			t.Fatalf("range %v: %v", r, err)
		}
		if !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
			t.Errorf("range %v: wrong bytes", r)
		}
		if err := unmap(); err != nil {
			t.Errorf("range %v: unmap: %v", r, err)
		}
	}
	if events != 5 {
		t.Errorf("%d requests observed for 5 mappings, want 5", events)
	}
	got, unmap, err := backend.MapRange(ctx, be, key, 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[10:110]) {
		t.Error("a mapping of a deleted object changed")
	}
	unmap()

	if _, _, err := backend.MapRange(ctx, be, key, 0, 1); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("missing object: got %v, want ErrNotFound", err)
	}
	if err := be.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{-1, 1}, {int64(len(data)), 1}, {1, int64(len(data))}} {
		if _, _, err := backend.MapRange(ctx, be, key, r[0], r[1]); !errors.Is(err, backend.ErrInvalidRange) {
			t.Errorf("range %v: got %v, want ErrInvalidRange", r, err)
		}
	}
	if _, _, err := backend.MapRange(ctx, be, key, 0, 0); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("empty range: got %v, want ErrUnsupported (read it with Get)", err)
	}
	for name, other := range map[string]backend.Backend{
		"mem":          mem.New(),
		"retry(mem)":   backend.NewRetry(mem.New(), backend.RetryOptions{}),
		"faulty(fs)":   backend.NewFaulty(fsb, backend.FaultOptions{}),
		"observe(mem)": backend.NewObserve(mem.New(), func(backend.RequestEvent) { t.Error("an unsupported mapping was observed") }),
		"limit(mem)":   backend.NewLimit(mem.New(), 1),
	} {
		if _, _, err := backend.MapRange(ctx, other, key, 0, 1); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%s: got %v, want ErrUnsupported", name, err)
		}
	}
}
