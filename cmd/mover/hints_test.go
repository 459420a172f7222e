package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/repo"
)

func TestWithHint(t *testing.T) {
	err := withHint(fmt.Errorf("gc: %w", &repo.BlobError{Err: repo.ErrBlobMissing}))
	if !errors.Is(err, repo.ErrBlobMissing) || !strings.HasSuffix(err.Error(), "(run mover repair index, then mover repair snapshots)") {
		t.Errorf("hint: %v", err)
	}
	if again := withHint(err); again.Error() != err.Error() {
		t.Errorf("hinted twice: %v", again)
	}
	plain := errors.New("disk on fire")
	if withHint(plain) != plain || withHint(nil) != nil {
		t.Error("an error no rule matches was changed")
	}
	said := fmt.Errorf("repository x does not exist (run mover init first): %w", repo.ErrNotRepository)
	if withHint(said) != said {
		t.Error("advice the text already says was added again")
	}
}

// TestCLIHints: the library's errors carry no CLI advice; the CLI adds it,
// once.
func TestCLIHints(t *testing.T) {
	c, dir := newCLI(t)
	c.env["MOVER_REPOSITORY"] = filepath.Join(dir, "none")
	r := c.run("snapshots")
	if r.code != exitNoRepository || strings.Count(r.stderr, "run mover init first") != 1 {
		t.Errorf("snapshots on no repository: exit %d, %q", r.code, r.stderr)
	}
	c, _ = newCLI(t)
	c.ok("init")
	r = c.run("import", "--snapshot", "latest:nope", "--target", filepath.Join(dir, "t.img"))
	if r.code != exitNotFound || !strings.Contains(r.stderr, "(mover snapshots lists them)") {
		t.Errorf("import of no snapshot: exit %d, %q", r.code, r.stderr)
	}
	if r := c.ok("completion", "bash"); !strings.Contains(r.stdout, "mover") {
		t.Errorf("completion bash printed %q", r.stdout)
	}
}
