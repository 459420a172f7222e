package fs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/blockmover/blockmover/repo/backend/fs"
)

// TestCreatePrivate: the directory Create makes, or finds empty, is
// private to its owner; a directory that holds files keeps its mode.
func TestCreatePrivate(t *testing.T) {
	base := t.TempDir()
	mode := func(dir string) os.FileMode {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	create := func(dir string) {
		be, err := fs.Create(dir)
		if err != nil {
			t.Fatal(err)
		}
		be.Close()
	}

	fresh := filepath.Join(base, "a", "repo")
	create(fresh)
	if m := mode(fresh); m != 0o700 {
		t.Errorf("created directory has mode %v, want 0700", m)
	}

	empty := filepath.Join(base, "empty")
	os.Mkdir(empty, 0o755)
	os.Chmod(empty, 0o755) // whatever the umask
	os.Mkdir(filepath.Join(empty, "lost+found"), 0o700)
	create(empty)
	if m := mode(empty); m != 0o700 {
		t.Errorf("empty directory made 0755 by its user has mode %v after Create, want 0700", m)
	}

	full := filepath.Join(base, "full")
	os.Mkdir(full, 0o755)
	os.Chmod(full, 0o755)
	os.WriteFile(filepath.Join(full, "notes.txt"), nil, 0o644)
	create(full)
	if m := mode(full); m != 0o755 {
		t.Errorf("directory with files has mode %v after Create, want its 0755 kept", m)
	}
}
