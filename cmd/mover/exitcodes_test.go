package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/blockmover/blockmover/csi"
	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/spf13/cobra"
)

// TestExitCodes: command lines and the exit codes a control plane acts on.
func TestExitCodes(t *testing.T) {
	c, dir := newCLI(t)
	repoDir := c.env["MOVER_REPOSITORY"]
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 4<<20)
	noRepo := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw"}}
	noPassword := &cli{t: t, env: map[string]string{"MOVER_REPOSITORY": repoDir}}
	wrong := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "nope", "MOVER_REPOSITORY": repoDir}}
	emptyPw := filepath.Join(dir, "empty")
	os.WriteFile(emptyPw, nil, 0o600)
	steps := []struct {
		c    *cli
		args []string
		code int
		want string
	}{
		{noRepo, []string{"snapshots"}, exitUsage, "no repository"},
		{c, []string{"snapshots", "--no-such-flag"}, exitUsage, "unknown flag"},
		{c, []string{"snapshots"}, exitNoRepository, "does not exist"},
		{c, []string{"init"}, exitOK, ""},
		{c, []string{"init"}, exitExists, "already exists"},
		{noPassword, []string{"snapshots"}, exitLocked, "no password"},
		{c, []string{"snapshots", "--password-file", emptyPw}, exitLocked, "is empty"},
		{wrong, []string{"snapshots"}, exitLocked, "wrong password"},
		{c, []string{"export", "-q", "--source", filepath.Join(dir, "missing.img"), "--name", "v"}, exitUnsuitable, "no such file"},
		{c, []string{"export", "-q", "--source", img, "--name", "v"}, exitOK, ""},
		{c, []string{"import", "-q", "--snapshot", "latest:other", "--target", filepath.Join(dir, "o.img")}, exitNotFound, "no snapshot of volume"},
		{c, []string{"import", "-q", "--snapshot", "latest", "--target", filepath.Join(repoDir, "x")}, exitUnsuitable, "inside the repository"},
		{c, []string{"import", "-q", "--snapshot", "latest", "--target", filepath.Join(dir, "o.img")}, exitOK, ""},
	}
	for _, s := range steps {
		if s.code == exitOK {
			s.c.ok(s.args...)
			continue
		}
		s.c.fails(s.code, s.want, s.args...)
	}
}

// TestExitCodePanic: a panic in a command exits exitPanic, never 2 (which a
// Job takes as a wrong command line), with one line on stderr, and its
// stack only with MOVER_DEBUG.
func TestExitCodePanic(t *testing.T) {
	for _, debug := range []string{"", "1"} {
		var out, errb strings.Builder
		env := &environment{stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
			getenv:    func(k string) string { return map[string]string{"MOVER_DEBUG": debug}[k] },
			beforeRun: func(*cobra.Command) { panic("injected\nfailure") }}
		code := run(context.Background(), []string{"generate", filepath.Join(t.TempDir(), "g.img")}, env)
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if code != exitPanic || !strings.HasPrefix(lines[0], "mover: internal error") || !strings.Contains(lines[0], "panic: injected failure") {
			t.Fatalf("MOVER_DEBUG=%q: exit %d, stderr %q", debug, code, errb.String())
		}
		if withStack := len(lines) > 1 && strings.Contains(errb.String(), "goroutine "); withStack != (debug != "") {
			t.Errorf("MOVER_DEBUG=%q: stack printed %v: %q", debug, withStack, errb.String())
		}
	}
}

// TestClassify: the libraries' sentinels, however wrapped, map to their
// codes; a signal's cause tells SIGINT from SIGTERM.
func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("opening: %w", fmt.Errorf("layer: %w", err)) }
	tests := []struct {
		err    error
		code   int
		reason string
	}{
		{errors.New("connection reset"), exitError, "Failed"},
		{wrap(&safego.PanicError{Value: "bug"}), exitError, "Panic"},
		{usagef("--x: bad"), exitUsage, "Usage"},
		{wrap(repo.ErrRepositoryExists), exitExists, "RepositoryExists"},
		{wrap(repo.ErrNotRepository), exitNoRepository, "NotRepository"},
		{wrap(repo.ErrConfigLost), exitNoRepository, "ConfigLost"},
		{wrap(repo.ErrLeaseHeld), exitBusy, "RepositoryBusy"},
		{wrap(repo.ErrWrongPassword), exitLocked, "WrongPassword"},
		{wrap(repo.ErrKeyFileDamaged), exitLocked, "KeyDamaged"},
		{errors.Join(errors.New("x"), wrap(repo.ErrKeyFileDamaged)), exitLocked, "KeyDamaged"},
		{wrap(errNoPassword), exitLocked, "NoPassword"},
		{wrap(backend.ErrPermanent), exitStorageRefused, "StorageRefused"},
		{wrap(repo.ErrSnapshotNotFound), exitNotFound, "SnapshotNotFound"},
		{wrap(mover.ErrNotVolume), exitUnsuitable, "Unsuitable"},
		{unsuitable(errors.New("busy")), exitUnsuitable, "Unsuitable"},
		{wrap(repo.ErrNewerFormat), exitNewerFormat, "NewerFormat"},
		{wrap(context.Canceled), exitError, "Failed"}, // not cancelled by us
	}
	for _, tc := range tests {
		o := classify(context.Background(), tc.err)
		if o.Code != tc.code || o.Reason != tc.reason {
			t.Errorf("%v: exit %d %s, want %d %s", tc.err, o.Code, o.Reason, tc.code, tc.reason)
		}
		if want := !slices.Contains(csi.PermanentExitCodes(), int32(o.Code)); o.Retryable != want {
			t.Errorf("%v: retryable %v", tc.err, o.Retryable)
		}
	}
	for sig, want := range map[os.Signal]int{syscall.SIGTERM: exitTerminated, os.Interrupt: exitInterrupted} {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(signalCause{sig})
		if o := classify(ctx, wrap(context.Canceled)); o.Code != want || !o.Retryable {
			t.Errorf("%v: %+v", sig, o)
		}
	}
}

// TestExitTable: the table in `mover --help`, the README and the Job's
// podFailurePolicy (csi.PermanentExitCodes) agree.
func TestExitTable(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := newCLI(t)
	help := c.ok("--help").stdout
	var permanent []int32
	for _, e := range exitTable() {
		if e.Code != exitOK && !e.Retryable {
			permanent = append(permanent, int32(e.Code))
		}
		if row := fmt.Sprintf("| %d | `%s` |", e.Code, e.Reason); e.Code != exitOK && !strings.Contains(string(readme), row) {
			t.Errorf("README has no row %q", row)
		}
		if !strings.Contains(help, fmt.Sprintf("%3d  %s", e.Code, e.meaning)) {
			t.Errorf("--help does not list exit %d", e.Code)
		}
	}
	if !slices.Equal(permanent, csi.PermanentExitCodes()) {
		t.Errorf("permanent exit codes %v, csi.PermanentExitCodes %v", permanent, csi.PermanentExitCodes())
	}
}

// panicky is a backend whose Get of a data object, or Put, panics: a bug
// in a worker goroutine.
type panicky struct {
	backend.Backend
	onPut bool
}

func (p panicky) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if !p.onPut && strings.HasPrefix(key, "data/") {
		panic("injected worker failure")
	}
	return p.Backend.Get(ctx, key, off, n)
}

func (p panicky) Put(ctx context.Context, key string, b []byte) error {
	if p.onPut && strings.HasPrefix(key, "data/") {
		panic("injected worker failure")
	}
	return p.Backend.Put(ctx, key, b)
}

// TestExitCodeWorkerPanic: a panic in a worker goroutine (check's readers,
// export's uploaders, import's fetchers) ends the command like one in the
// command itself: exit 1 (reason Panic) and one line, not Go's exit 2 and a crash.
func TestExitCodeWorkerPanic(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "a.img")
	makeImage(t, img, 8<<20)
	c.ok("init")
	c.ok("export", "-q", "--source", img, "--volume", "a")
	other := filepath.Join(dir, "b.img")
	makeImageSeed(t, other, 8<<20, 9) // new chunks: the export uploads packs
	for _, tc := range []struct {
		onPut bool
		args  []string
	}{
		{false, []string{"check", "--read-data"}},
		{false, []string{"import", "-q", "--snapshot", "latest:a", "--target", filepath.Join(dir, "out.img")}},
		{true, []string{"export", "-q", "--source", other, "--volume", "b"}},
	} {
		var out, errb strings.Builder
		env := &environment{stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
			getenv:      func(k string) string { return c.env[k] },
			wrapBackend: func(be backend.Backend) backend.Backend { return panicky{be, tc.onPut} }}
		code := run(context.Background(), tc.args, env)
		if code != exitPanic || !strings.Contains(errb.String(), "panic: injected worker failure") {
			t.Errorf("mover %s: exit %d, stderr %q", tc.args[0], code, errb.String())
		}
	}
}
