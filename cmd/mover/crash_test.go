package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
)

// testPolynomial makes chunking, and so stored sizes, equal across the
// test's repositories.
const testPolynomial = "3DA3358B4DC173"

// TestMain lets the crash tests run this test binary as the mover command,
// so they can SIGKILL a real process at any point.
func TestMain(m *testing.M) {
	if os.Getenv("MOVER_TEST_PROGRESS") == "1" { // TestProgressInTmux
		progressDemo()
		os.Exit(0)
	}
	if os.Getenv("MOVER_TEST_EXEC") == "1" {
		ctx, stop := signalContext()
		env := &environment{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
		var k *killer
		if n := os.Getenv("MOVER_TEST_KILL_AFTER"); n != "" {
			k = &killer{}
			k.after, _ = strconv.ParseInt(n, 10, 64)
			env.wrapBackend = k.wrap
		}
		code := run(ctx, os.Args[1:], env)
		stop()
		if f := os.Getenv("MOVER_TEST_OPS_FILE"); f != "" && k != nil {
			os.WriteFile(f, []byte(strconv.FormatInt(k.ops.Load(), 10)), 0o600)
		}
		os.Exit(code)
	}
	s3test.SetTestEnv()
	os.Exit(m.Run())
}

// home is a directory that stands for the user's home in mover's child
// processes: one per test, made on first use.
func (c *cli) home() string {
	if c.homeDir == "" {
		c.homeDir = c.t.TempDir()
	}
	return c.homeDir
}

// moverProcess returns a command that runs mover in a child process.
func (c *cli) moverProcess(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MOVER_TEST_EXEC=1")
	if _, ok := c.env["HOME"]; !ok {
		// The default index cache, as a user's, but under the test's
		// directory rather than the real home.
		cmd.Env = append(cmd.Env, "HOME="+c.home())
	}
	for k, v := range c.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// TestCrashDuringExport SIGKILLs exports at random points. After each kill
// the repository passes check, and a rerun stores no more than what no
// index checkpoint covered at the kill, plus one pack per upload worker.
// `make soak` runs 50 points; `make test` runs 6.
func TestCrashDuringExport(t *testing.T) {
	points := 6
	if os.Getenv("BLOCKMOVER_SOAK") != "" {
		points = 50
	}
	const packSize = 1 << 20
	const uploads = 2
	_, dir := newCLI(t)
	img := filepath.Join(dir, "vol.img")
	f, _ := os.Create(img)
	f.Close()
	makeImageSeed(t, img, 480<<20, 77)

	// Reference: an uninterrupted export, for its duration and size.
	ref := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": filepath.Join(dir, "ref")}}
	ref.ok("init", "--pack-size", "1MiB", "--polynomial", testPolynomial)
	start := time.Now()
	var full exportJSON
	json.Unmarshal([]byte(ref.ok("export", "-q", "--json", "--source", img, "--name", "v", "--connections", "2").stdout), &full)
	dur := time.Since(start)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	t.Logf("uninterrupted export: %v, %d bytes stored", dur, full.StoredBytes)

	for i := range points {
		c := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": filepath.Join(dir, "r", string(rune('a'+i%26))+string(rune('a'+i/26)))}}
		c.ok("init", "--pack-size", "1MiB", "--polynomial", testPolynomial)
		kill := time.Duration(rng.Int64N(int64(dur)))
		cmd := c.moverProcess("export", "-q", "--source", img, "--name", "v", "--connections", "2")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(kill)
		cmd.Process.Kill()
		cmd.Wait()

		c.ok("check")
		covered := indexedBytes(t, c.env["MOVER_REPOSITORY"])
		var rerun exportJSON
		json.Unmarshal([]byte(c.ok("export", "-q", "--json", "--source", img, "--name", "v", "--connections", "2").stdout), &rerun)
		limit := full.StoredBytes - covered + uploads*(packSize+packSize/8) + 64<<10
		t.Logf("killed at %v: %d bytes indexed; rerun stored %d (limit %d)", kill.Round(time.Millisecond), covered, rerun.StoredBytes, limit)
		if rerun.StoredBytes > limit {
			t.Fatalf("rerun after a kill at %v stored %d bytes, more than the %d not covered by a checkpoint plus a pack per upload worker", kill, rerun.StoredBytes, full.StoredBytes-covered)
		}
		c.ok("check", "--read-data")
	}
}

func indexedBytes(t *testing.T, dir string) int64 {
	be, err := fs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(context.Background(), be, []byte("pw"), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	return r.IndexedBytes()
}

// killer wraps the backends of a mover child process and SIGKILLs the
// process right after its after-th write or delete to the storage
// returns: a deterministic crash point for every step of a command.
type killer struct {
	after int64
	ops   atomic.Int64
}

func (k *killer) wrap(be backend.Backend) backend.Backend { return &killingBackend{Backend: be, k: k} }

func (k *killer) count() {
	if n := k.ops.Add(1); k.after > 0 && n >= k.after {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

type killingBackend struct {
	backend.Backend
	k *killer
}

func (b *killingBackend) Put(ctx context.Context, key string, data []byte) error {
	err := b.Backend.Put(ctx, key, data)
	b.k.count()
	return err
}

func (b *killingBackend) Delete(ctx context.Context, key string) error {
	err := b.Backend.Delete(ctx, key)
	b.k.count()
	return err
}

// RemoveStaleTemp keeps gc's temporary-file cleanup of a directory
// repository (each file deleted counts as one write).
func (b *killingBackend) RemoveStaleTemp(ctx context.Context, olderThan time.Duration) (int, int64, error) {
	tc, ok := b.Backend.(backend.TempCleaner)
	if !ok {
		return 0, 0, nil
	}
	n, size, err := tc.RemoveStaleTemp(ctx, olderThan)
	for range n {
		b.k.count()
	}
	return n, size, err
}
