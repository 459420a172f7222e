package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The maintenance crash tests kill gc, forget and repair index (SIGKILL of
// a child process) right after their Nth write or delete to the storage,
// for every N of a run (every 3rd N in make test), and then check, with no
// manual step, that every snapshot that was not forgotten imports
// byte-identically, that the next gc completes, and that check --read-data
// passes.

// maintFixture is a directory repository holding snapshots of volumes a
// (twice: the second rewrites 192 KiB in each MiB), b and c, small enough
// that a gc run makes a few dozen writes and deletes.
type maintFixture struct {
	dir    string
	repo   string            // the template repository
	images map[string]string // volume → image of its newest snapshot
	first  string            // image of a's first snapshot
	bPacks []string          // the packs b's export wrote (paths)
}

func newMaintFixture(t *testing.T) *maintFixture {
	t.Helper()
	c, dir := newCLI(t)
	f := &maintFixture{dir: dir, repo: c.env["MOVER_REPOSITORY"], images: map[string]string{}}
	c.ok("init", "--chunker", "fixed", "--fixed-size", "64KiB", "--segment-size", "4MiB", "--pack-size", "1MiB")
	img := func(name string, seed uint64) string {
		p := filepath.Join(dir, name+".img")
		os.WriteFile(p, nil, 0o600)
		makeImageSeed(t, p, 6<<20, seed)
		return p
	}
	f.first = img("a0", 21)
	f.images["b"], f.images["c"] = img("b", 22), img("c", 23)
	for _, v := range []struct{ vol, img string }{{"a", f.first}, {"b", f.images["b"]}, {"c", f.images["c"]}} {
		before := map[string]bool{}
		packs, _ := filepath.Glob(filepath.Join(f.repo, "data", "*", "*"))
		for _, p := range packs {
			before[p] = true
		}
		c.ok("export", "-q", "--source", v.img, "--name", v.vol)
		packs, _ = filepath.Glob(filepath.Join(f.repo, "data", "*", "*"))
		for _, p := range packs {
			if v.vol == "b" && !before[p] {
				f.bPacks = append(f.bPacks, p)
			}
		}
	}
	// a again, with 192 KiB rewritten in every MiB: each of a's packs is
	// then partly garbage once its first snapshot is forgotten.
	b, err := os.ReadFile(f.first)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for off := 256 << 10; off+192<<10 <= len(b); off += 1 << 20 {
		for i := range 192 << 10 {
			b[off+i] = byte(rng.Uint32())
		}
	}
	f.images["a"] = filepath.Join(dir, "a1.img")
	if err := os.WriteFile(f.images["a"], b, 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("export", "-q", "--source", f.images["a"], "--name", "a")
	return f
}

// copyRepo copies the template repository (times and modes kept).
func copyRepo(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
}

// backdate moves every object of a directory repository d into the past,
// as if it had been written d earlier (the grace period is judged by the
// storage's times, which are the files' modification times).
func backdate(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		at := fi.ModTime().Add(-d)
		return os.Chtimes(p, at, at)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// child runs mover in a child process that is killed right after its
// killAt-th write or delete (0: never). It returns whether the kill
// happened, the number of writes and deletes made, and stdout.
func (c *cli) child(killAt int, args ...string) (killed bool, ops int, stdout string) {
	c.t.Helper()
	opsFile := filepath.Join(c.t.TempDir(), "ops")
	cmd := c.moverProcess(args...)
	cmd.Env = append(cmd.Env, "MOVER_TEST_KILL_AFTER="+strconv.Itoa(killAt), "MOVER_TEST_OPS_FILE="+opsFile)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ProcessState.Sys().(interface{ Signaled() bool }).Signaled() {
		return true, killAt, out.String()
	}
	if err != nil {
		c.t.Fatalf("mover %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	b, _ := os.ReadFile(opsFile)
	ops, _ = strconv.Atoi(string(b))
	return false, ops, out.String()
}

// killPoints returns the kill points to try for a command making ops
// writes and deletes: every one in make soak, every 3rd otherwise.
func killPoints(ops int) []int {
	step := 3
	if os.Getenv("BLOCKMOVER_SOAK") != "" {
		step = 1
	}
	var out []int
	for n := 1; n <= ops; n += step {
		out = append(out, n)
	}
	if out[len(out)-1] != ops {
		out = append(out, ops)
	}
	return out
}

// crashCase is one command killed at every point, from a template.
type crashCase struct {
	name     string
	template string   // repository to start each run from
	cmd      []string // the command killed
	rerun    []string // what a scheduler would run next (may equal cmd)
	gc       []string // the next gc
	keep     map[string]string
	// damaged: the template is damaged until the rerun repairs it, so
	// check runs only after the rerun.
	damaged bool
	// exercised checks the uninterrupted run's --json output: the test
	// must cover the steps it is about.
	exercised func(t *testing.T, stdout string)
	// killed, if set, checks the repository after the kill at write n
	// (after check and the imports); finished after the rerun.
	killed, finished func(t *testing.T, c *cli, n int)
}

func runCrashCase(t *testing.T, f *maintFixture, cc crashCase) {
	t.Helper()
	ref := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": filepath.Join(t.TempDir(), "ref")}}
	copyRepo(t, cc.template, ref.env["MOVER_REPOSITORY"])
	_, ops, out := ref.child(0, append(cc.cmd, "--json")...)
	if cc.exercised != nil {
		cc.exercised(t, out)
	}
	points := killPoints(ops)
	t.Logf("%s: %d writes and deletes; killing after %v", cc.name, ops, points)
	for _, n := range points {
		c := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": filepath.Join(t.TempDir(), "r")}}
		copyRepo(t, cc.template, c.env["MOVER_REPOSITORY"])
		if killed, _, _ := c.child(n, cc.cmd...); !killed && n < ops {
			t.Fatalf("%s: not killed at write %d of %d", cc.name, n, ops)
		}
		if r := c.run("check"); r.code != 0 && !cc.damaged {
			t.Fatalf("%s killed after write %d: check fails:\n%s%s", cc.name, n, r.stdout, r.stderr)
		}
		for vol, img := range cc.keep {
			target := filepath.Join(t.TempDir(), vol+".img")
			if r := c.run("import", "-q", "--snapshot", "latest:"+vol, "--target", target); r.code != 0 {
				t.Fatalf("%s killed after write %d: import of %s: %s", cc.name, n, vol, r.stderr)
			}
			want, _ := os.ReadFile(img)
			got, _ := os.ReadFile(target)
			if !bytes.Equal(want, got) {
				t.Fatalf("%s killed after write %d: %s imports different bytes", cc.name, n, vol)
			}
		}
		if cc.killed != nil {
			cc.killed(t, c, n)
		}
		if cc.rerun != nil {
			if r := c.run(cc.rerun...); r.code != 0 {
				t.Fatalf("%s killed after write %d: the rerun fails: %s", cc.name, n, r.stderr)
			}
		}
		if cc.finished != nil {
			cc.finished(t, c, n)
		}
		if r := c.run(cc.gc...); r.code != 0 {
			t.Fatalf("%s killed after write %d: the next gc fails: %s", cc.name, n, r.stderr)
		}
		if r := c.run("check", "--read-data"); r.code != 0 {
			t.Fatalf("%s killed after write %d: check --read-data after the next gc fails:\n%s%s", cc.name, n, r.stdout, r.stderr)
		}
	}
}

func gcExercised(t *testing.T, stdout string) {
	t.Helper()
	var res struct{ Deleted, Repacked int }
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("gc --json: %v: %q", err, stdout)
	}
	if res.Deleted == 0 || res.Repacked == 0 {
		t.Fatalf("the uninterrupted gc deleted %d and repacked %d packs: the crash test would not cover both", res.Deleted, res.Repacked)
	}
}

// TestCrashDuringGC kills gc after each of its writes and deletes, with
// --grace 0s, and with a grace period that has passed since an earlier
// run condemned the garbage (objects back-dated rather than waited for).
func TestCrashDuringGC(t *testing.T) {
	f := newMaintFixture(t)
	c := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": f.repo}}
	c.ok("forget", "--keep-last", "1", "--name", "a")
	c.ok("forget", "latest:b")
	keep := map[string]string{"a": f.images["a"], "c": f.images["c"]}
	t.Run("grace 0s", func(t *testing.T) {
		runCrashCase(t, f, crashCase{name: "gc --grace 0s", template: f.repo, cmd: []string{"gc", "--grace", "0s"},
			gc: []string{"gc", "--grace", "0s"}, keep: keep, exercised: gcExercised})
	})
	t.Run("grace passed", func(t *testing.T) {
		tmpl := filepath.Join(t.TempDir(), "condemned")
		copyRepo(t, f.repo, tmpl)
		c := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": tmpl}}
		backdate(t, tmpl, 2*time.Hour)
		c.ok("gc", "--grace", "1h", "--repack-threshold", "1") // condemns what is dead, repacks nothing
		backdate(t, tmpl, 2*time.Hour)
		runCrashCase(t, f, crashCase{name: "gc --grace 1h", template: tmpl, cmd: []string{"gc", "--grace", "1h"},
			gc: []string{"gc", "--grace", "1h"}, keep: keep, exercised: gcExercised})
	})
}

// TestCrashDuringForget kills forget after each write and delete; its rerun
// finishes the work.
func TestCrashDuringForget(t *testing.T) {
	f := newMaintFixture(t)
	keep := map[string]string{"a": f.images["a"], "b": f.images["b"], "c": f.images["c"]}
	cmd := []string{"forget", "--keep-last", "1"}
	runCrashCase(t, f, crashCase{name: "forget", template: f.repo, cmd: cmd, rerun: cmd,
		gc: []string{"gc", "--grace", "0s"}, keep: keep, exercised: func(t *testing.T, stdout string) {
			var res forgetJSON
			if json.Unmarshal([]byte(stdout), &res); len(res.Removed) != 1 {
				t.Fatalf("forget removed %d snapshots, want a's first: %s", len(res.Removed), stdout)
			}
		}})
}

// TestCrashDuringRepairIndex kills repair index after each write and
// delete: the old and new index files overlap until the old are gone.
func TestCrashDuringRepairIndex(t *testing.T) {
	f := newMaintFixture(t)
	keep := map[string]string{"a": f.images["a"], "b": f.images["b"], "c": f.images["c"]}
	cmd := []string{"repair", "index"}
	runCrashCase(t, f, crashCase{name: "repair index", template: f.repo, cmd: cmd,
		gc: []string{"gc", "--grace", "0s"}, keep: keep, exercised: func(t *testing.T, stdout string) {
			var res struct{ Replaced int }
			if json.Unmarshal([]byte(stdout), &res); res.Replaced < 3 {
				t.Fatalf("repair index replaced %d index files: %s", res.Replaced, stdout)
			}
		}})
}

// TestCrashDuringRepairSnapshots kills repair snapshots --write-repaired
// after each write and delete, on a repository that lost one of b's packs:
// the other snapshots stay whole, and the rerun replaces b by a copy whose
// lost ranges restore as zeros.
func TestCrashDuringRepairSnapshots(t *testing.T) {
	f := newMaintFixture(t)
	largest, size := "", int64(-1)
	for _, p := range f.bPacks {
		if fi, err := os.Stat(p); err == nil && fi.Size() > size {
			largest, size = p, fi.Size()
		}
	}
	if err := os.Remove(largest); err != nil {
		t.Fatal(err)
	}
	keep := map[string]string{"a": f.images["a"], "c": f.images["c"]}
	cmd := []string{"repair", "snapshots", "--write-repaired"}
	runCrashCase(t, f, crashCase{name: "repair snapshots", template: f.repo, cmd: cmd, rerun: cmd, damaged: true,
		gc: []string{"gc", "--grace", "0s"}, keep: keep, exercised: func(t *testing.T, stdout string) {
			var res struct{ Repaired []string }
			if json.Unmarshal([]byte(stdout), &res); len(res.Repaired) != 1 {
				t.Fatalf("repair snapshots repaired %d snapshots, want b: %s", len(res.Repaired), stdout)
			}
		}})
}

// TestCrashDuringInit kills init after each of its writes. The next init
// finishes the work with no person: a complete repository is reported as
// existing (exit 3) and opens; a key file without a config (killed between
// the two writes) is another init's while it is young (exit 11, saying
// when it is taken over) and is taken over once it is old.
func TestCrashDuringInit(t *testing.T) {
	ref, _ := newCLI(t)
	_, ops, _ := ref.child(0, "init")
	if ops < 2 {
		t.Fatalf("init made %d writes, want a key file and a config", ops)
	}
	tookOver := 0
	for killAt := 1; killAt <= ops; killAt++ {
		c, dir := newCLI(t)
		repoDir := c.env["MOVER_REPOSITORY"]
		killed, _, _ := c.child(killAt, "init")
		if !killed {
			t.Fatalf("init not killed after write %d of %d", killAt, ops)
		}
		if _, err := os.Stat(filepath.Join(repoDir, "config")); err != nil {
			// Only the key file: young, then taken over.
			if r := c.run("init"); r.code != exitBusy || !strings.Contains(r.stderr, "taken over at") {
				t.Fatalf("kill after write %d: init beside a young key file: exit %d, %q", killAt, r.code, r.stderr)
			}
			backdate(t, repoDir, 11*time.Minute)
			c.ok("init")
			tookOver++
		} else if r := c.run("init"); r.code != exitExists {
			t.Fatalf("kill after write %d: init over a whole repository: exit %d, %q", killAt, r.code, r.stderr)
		}
		img := filepath.Join(dir, "v.img")
		makeImage(t, img, 2<<20)
		c.ok("export", "-q", "--source", img, "--volume", "v")
		c.ok("check", "--read-data")
	}
	if tookOver == 0 {
		t.Error("no kill point left a key file without a config")
	}
}
