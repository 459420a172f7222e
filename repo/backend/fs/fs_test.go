package fs_test

import (
	"context"
	"errors"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/blockmover/blockmover/repo/backendtest"
)

func newBackend(t testing.TB) *fs.Backend {
	t.Helper()
	be, err := fs.Create(filepath.Join(t.TempDir(), "nested", "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return be
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return newBackend(t) })
}

func BenchmarkBackend(b *testing.B) {
	backendtest.Bench(b, func(b *testing.B) backend.Backend { return newBackend(b) })
}

// tempFiles returns the temporary files under dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d iofs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), backend.TempPrefix) {
			found = append(found, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	if _, err := fs.Open(filepath.Join(dir, "missing")); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("Open of a missing directory: %v, want ErrNotExist", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Open(file); err == nil {
		t.Error("Open of a file succeeded")
	}
	if _, err := fs.Create(filepath.Join(file, "below")); err == nil {
		t.Error("Create below a file succeeded")
	}

	// A repository reached through a symbolic link lists normally.
	be, err := fs.Create(filepath.Join(dir, "real"))
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Put(t.Context(), "data/ab/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	linked, err := fs.Open(filepath.Join(dir, "link"))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := linked.List(t.Context(), "", func(fi backend.ObjectInfo) error {
		keys = append(keys, fi.Key)
		return nil
	}); err != nil || !slices.Equal(keys, []string{"data/ab/x"}) {
		t.Errorf("List through a linked directory: %q, %v", keys, err)
	}
}

func TestLayout(t *testing.T) {
	be := newBackend(t)
	if err := be.Put(t.Context(), "data/ab/ab12", []byte("content")); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(be.Dir(), "data", "ab", "ab12")
	got, err := os.ReadFile(name)
	if err != nil || string(got) != "content" {
		t.Fatalf("file %s: %q, %v", name, got, err)
	}
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("object mode %v, want read-only", fi.Mode())
	}
	if left := tempFiles(t, be.Dir()); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

// TestPutExistingSameBytes: unlike the suite, which allows nil, the file
// system backend always reports ErrExists.
func TestPutExistingSameBytes(t *testing.T) {
	be := newBackend(t)
	if err := be.Put(t.Context(), "config", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := be.Put(t.Context(), "config", []byte("x")); !errors.Is(err, backend.ErrExists) {
		t.Errorf("second Put: %v, want ErrExists", err)
	}
	if left := tempFiles(t, be.Dir()); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

func TestKeyCollidesWithDirectory(t *testing.T) {
	be := newBackend(t)
	ctx := t.Context()
	for _, key := range []string{"config", "data/ab/x"} {
		if err := be.Put(ctx, key, []byte(key)); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"config/below", "data/ab/x/y", "data/ab", "data"} {
		err := be.Put(ctx, key, []byte("x"))
		if !errors.Is(err, backend.ErrPermanent) || errors.Is(err, backend.ErrExists) {
			t.Errorf("Put(%q): %v, want ErrPermanent", key, err)
		}
	}
	// Delete never removes a directory, even an empty one.
	if err := be.Delete(ctx, "data/ab/x"); err != nil {
		t.Fatal(err)
	}
	if err := be.Delete(ctx, "data/ab"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Delete of a directory: %v, want ErrNotFound", err)
	}
	if fi, err := os.Stat(filepath.Join(be.Dir(), "data", "ab")); err != nil || !fi.IsDir() {
		t.Errorf("directory data/ab: %v", err)
	}
}

func TestForeignFilesIgnored(t *testing.T) {
	be := newBackend(t)
	ctx := t.Context()
	if err := be.Put(ctx, "data/ab/real", []byte("real")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(be.Dir(), "data", "ab")
	// Debris of a crashed Put, and things that are not regular files.
	for _, name := range []string{backend.TempPrefix + "123", backend.TempPrefix + "lock-x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, backend.TempPrefix+"dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, backend.TempPrefix+"dir", "inner"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := mkfifo(filepath.Join(dir, "fifo")); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := be.List(ctx, "", func(fi backend.ObjectInfo) error {
		keys = append(keys, fi.Key)
		return nil
	}); err != nil || !slices.Equal(keys, []string{"data/ab/real"}) {
		t.Errorf("List: %q, %v; want only data/ab/real", keys, err)
	}
	for _, key := range []string{"data/ab/link", "data/ab/fifo"} {
		if _, err := be.Stat(ctx, key); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Stat(%q): %v, want ErrNotFound", key, err)
		}
		if _, err := be.Get(ctx, key, 0, -1); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Get(%q): %v, want ErrNotFound", key, err)
		}
	}
	if _, err := be.Stat(ctx, "data/ab/"+backend.TempPrefix+"123"); !errors.Is(err, backend.ErrInvalidKey) {
		t.Errorf("Stat of a temporary file: %v, want ErrInvalidKey", err)
	}
}

func TestReaderOutlivesDelete(t *testing.T) {
	be := newBackend(t)
	ctx := t.Context()
	if err := be.Put(ctx, "data/ab/x", []byte("still here")); err != nil {
		t.Fatal(err)
	}
	rc, err := be.Get(ctx, "data/ab/x", 6, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := be.Delete(ctx, "data/ab/x"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	n, _ := rc.Read(buf)
	if string(buf[:n]) != "here" {
		t.Errorf("read after Delete: %q", buf[:n])
	}
}

func TestCancelledPutLeavesNothing(t *testing.T) {
	be := newBackend(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := be.Put(ctx, "data/ab/x", make([]byte, 1<<20)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put: %v", err)
	}
	if left := tempFiles(t, be.Dir()); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

func TestClosed(t *testing.T) {
	be := newBackend(t)
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
	if err := be.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := be.Put(t.Context(), "config", nil); !errors.Is(err, backend.ErrPermanent) {
		t.Errorf("Put after Close: %v, want ErrPermanent", err)
	}
	if err := be.List(t.Context(), "", func(backend.ObjectInfo) error { return nil }); !errors.Is(err, backend.ErrPermanent) {
		t.Errorf("List after Close: %v, want ErrPermanent", err)
	}
}

func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores file permissions")
	}
	be := newBackend(t)
	if err := os.Chmod(be.Dir(), 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(be.Dir(), 0o700) })
	if err := be.Put(t.Context(), "config", []byte("x")); !errors.Is(err, backend.ErrPermanent) {
		t.Errorf("Put into a read-only directory: %v, want ErrPermanent", err)
	}
}

// TestRemoveStaleTemp: temporary files (unpublished writes, publication
// locks) older than the limit are deleted; younger ones and objects stay.
func TestRemoveStaleTemp(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "repo")
	be, err := fs.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Put(ctx, "data/ab/abcd", []byte("object")); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "data", "ab")
	past := time.Now().Add(-2 * time.Hour)
	files := []struct {
		name  string
		size  int
		stale bool
	}{
		{backend.TempPrefix + "123", 100, true},
		{backend.TempPrefix + "lock-abcd", 0, true},
		{backend.TempPrefix + "456", 50, false},
	}
	for _, f := range files {
		p := filepath.Join(sub, f.name)
		if err := os.WriteFile(p, make([]byte, f.size), 0o600); err != nil {
			t.Fatal(err)
		}
		if f.stale {
			if err := os.Chtimes(p, past, past); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, size, err := be.RemoveStaleTemp(ctx, time.Hour)
	if err != nil || n != 2 || size != 100 {
		t.Fatalf("RemoveStaleTemp = %d files, %d bytes, %v; want 2, 100, nil", n, size, err)
	}
	for _, f := range files {
		_, err := os.Stat(filepath.Join(sub, f.name))
		if gone := errors.Is(err, iofs.ErrNotExist); gone != f.stale {
			t.Errorf("%s: stat %v; stale %v", f.name, err, f.stale)
		}
	}
	if got, err := be.Get(ctx, "data/ab/abcd", 0, -1); err != nil {
		t.Fatalf("object after cleanup: %v", err)
	} else {
		got.Close()
	}
}
