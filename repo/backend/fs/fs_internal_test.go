package fs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backendtest"
)

// newNoLink returns a backend that uses the fallback for file systems
// without hard links.
func newNoLink(t testing.TB) *Backend {
	t.Helper()
	be, err := Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	be.noLink.Store(true)
	return be
}

func TestConformanceNoLink(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return newNoLink(t) })
}

func TestNoLinkStaleLock(t *testing.T) {
	be := newNoLink(t)
	const key = "data/ab/locked"
	name := filepath.Join(be.Dir(), filepath.FromSlash(key))
	lock := filepath.Join(filepath.Dir(name), backend.TempPrefix+"lock-"+filepath.Base(name))
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	// A fresh lock is waited for, until the context ends.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := be.Put(ctx, key, []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put under a held lock: %v, want DeadlineExceeded", err)
	}
	if _, err := be.Stat(t.Context(), key); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Stat after a timed-out Put: %v, want ErrNotFound", err)
	}

	// A stale lock is broken.
	old := time.Now().Add(-2 * staleLock)
	if err := os.Chtimes(lock, old, old); err != nil {
		t.Fatal(err)
	}
	if err := be.Put(t.Context(), key, []byte("x")); err != nil {
		t.Fatalf("Put under a stale lock: %v", err)
	}
	entries, err := os.ReadDir(filepath.Dir(name))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), backend.TempPrefix) {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// FuzzPath checks that every key the backend accepts maps to a path inside
// its directory.
func FuzzPath(f *testing.F) {
	for _, s := range []string{"config", "data/ab/ab12", "../x", "a/../../b", "/etc/passwd", `a\..\b`, "a/./b", "a//b", ".tmp-1", "C:/x", "NUL"} {
		f.Add(s)
	}
	be := &Backend{dir: filepath.Join(os.TempDir(), "fuzz-root")}
	f.Fuzz(func(t *testing.T, key string) {
		name, err := be.path(context.Background(), backend.OpGet, key)
		if err != nil {
			if !errors.Is(err, backend.ErrInvalidKey) {
				t.Fatalf("path(%q): %v, want ErrInvalidKey", key, err)
			}
			return
		}
		rel, err := filepath.Rel(be.dir, name)
		if err != nil || !filepath.IsLocal(rel) || filepath.ToSlash(rel) != key {
			t.Fatalf("key %q maps to %q, outside %q or renamed", key, name, be.dir)
		}
	})
}
