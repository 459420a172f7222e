package repo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/blockmover/blockmover/repo/backend/mem"
)

func fsBackend(t *testing.T, dir string) backend.Backend {
	t.Helper()
	be, err := fs.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

// TestInitRefusesNonEmpty: init creates a repository only where nothing
// is, and says what is there otherwise.
func TestInitRefusesNonEmpty(t *testing.T) {
	ctx := context.Background()
	opts := InitOptions{KDF: testKDF}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600)
	os.MkdirAll(filepath.Join(dir, "photos"), 0o700)
	os.WriteFile(filepath.Join(dir, "photos", "cat.jpg"), []byte("meow"), 0o600)
	_, err := Init(ctx, fsBackend(t, dir), testPassword, opts)
	if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "holds 2 objects, e.g. notes.txt") {
		t.Fatalf("init in a directory with files: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("refused init left %d entries, want the 2 that were there", len(ents))
	}

	// An empty directory, also with empty subdirectories (lost+found of
	// a fresh file system), is fine.
	dir = t.TempDir()
	os.Mkdir(filepath.Join(dir, "lost+found"), 0o700)
	be := fsBackend(t, dir)
	r, err := Init(ctx, be, testPassword, opts)
	if err != nil {
		t.Fatalf("init in an empty directory: %v", err)
	}
	r.Close()
	if _, err := Init(ctx, be, testPassword, opts); !errors.Is(err, ErrRepositoryExists) {
		t.Fatalf("init over a repository: %v", err)
	}
}

// TestConfigLost: a repository without its config is reported as such by
// Open and Init, never as "no repository here", and Init does not write a
// new one.
func TestConfigLost(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t)
	writeBlobs(t, r, 3)
	if err := be.Delete(ctx, configKey); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"open":             func() error { _, err := Open(ctx, be, testPassword, Options{}); return err }(),
		"init":             func() error { _, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF}); return err }(),
		"read object lock": func() error { _, err := ReadObjectLock(ctx, be); return err }(),
	} {
		if !errors.Is(err, ErrConfigLost) || errors.Is(err, ErrNotRepository) {
			t.Fatalf("%s without config: %v", name, err)
		}
		for _, want := range []string{"config is missing", "repository ID", "chunker polynomial", "init will not overwrite", "backup copy", "data/", "snapshots/"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s without config: %q does not say %q", name, err, want)
			}
		}
	}
	if _, err := be.Stat(ctx, configKey); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("a refused init wrote a config: %v", err)
	}
}

// TestInitInterruptedOrRacing: key files and nothing else are an init
// between its first and last write. If a config appears meanwhile, Init
// reports the repository as existing; if not, as a lost config whose
// remedy is to start over.
func TestInitInterruptedOrRacing(t *testing.T) {
	ctx := context.Background()
	_, be := newTestRepo(t)
	cfg, err := backend.ReadAll(ctx, be, configKey, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	be.Delete(ctx, configKey)

	go func() {
		time.Sleep(300 * time.Millisecond)
		be.Put(ctx, configKey, cfg)
	}()
	if _, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF}); !errors.Is(err, ErrRepositoryExists) {
		t.Fatalf("init while another writes its config: %v", err)
	}

	be.Delete(ctx, configKey)
	start := time.Now()
	_, err = Init(ctx, be, testPassword, InitOptions{KDF: testKDF})
	if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "interrupted") || !strings.Contains(err.Error(), "taken over at") {
		t.Fatalf("init beside young key files only: %v", err)
	}
	if time.Since(start) < initWait {
		t.Fatalf("init gave up after %v, before another init could write its config", time.Since(start))
	}
	// Once the key files are staleInit old, they are an interrupted
	// init's: the next init deletes them and creates the repository,
	// with no person in between.
	old := agedKeys{be, staleInit + time.Minute}
	r, err := Init(ctx, old, testPassword, InitOptions{KDF: testKDF})
	if err != nil {
		t.Fatalf("init beside stale key files only: %v", err)
	}
	r.Close()
	var keys int
	be.List(ctx, keysPrefix, func(backend.ObjectInfo) error { keys++; return nil })
	if keys != 1 {
		t.Errorf("%d key files after the take-over, want the new one only", keys)
	}
	if _, err := Open(ctx, be, testPassword, Options{}); err != nil {
		t.Fatalf("opening the repository made over an interrupted init: %v", err)
	}
}

// agedKeys shows key files d older than they are.
type agedKeys struct {
	backend.Backend
	d time.Duration
}

func (a agedKeys) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	return a.Backend.List(ctx, prefix, func(oi backend.ObjectInfo) error {
		if strings.HasPrefix(oi.Key, keysPrefix) {
			oi.ModTime = oi.ModTime.Add(-a.d)
		}
		return fn(oi)
	})
}

// TestInitRace: of two inits racing for one location, one creates the
// repository and the other reports ErrRepositoryExists, leaving no key
// file of its own behind (it would shadow the winner's with the same
// password).
func TestInitRace(t *testing.T) {
	ctx := context.Background()
	for range 5 {
		be := mem.New()
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Go(func() {
				r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF})
				if err == nil {
					r.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		ok, exists := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrRepositoryExists):
				exists++
			default:
				t.Fatalf("racing init: %v", err)
			}
		}
		if ok != 1 || exists != 1 {
			t.Fatalf("racing inits: %v", errs)
		}
		keys := 0
		be.List(ctx, keysPrefix, func(backend.ObjectInfo) error { keys++; return nil })
		if keys != 1 {
			t.Fatalf("racing inits left %d key files, want 1", keys)
		}
		r := reopen(t, be, Options{})
		r.Close()
	}
}
