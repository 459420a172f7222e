package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/bench"
	"github.com/blockmover/blockmover/repo"
	"github.com/zeebo/blake3"
)

// cli runs mover in-process with the given environment variables.
type cli struct {
	t       *testing.T
	env     map[string]string
	homeDir string // see home
}

type result struct {
	code           int
	stdout, stderr string
}

func (c *cli) run(args ...string) result {
	c.t.Helper()
	var out, errb bytes.Buffer
	env := &environment{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return c.env[k] }}
	code := run(context.Background(), args, env)
	return result{code, out.String(), errb.String()}
}

func (c *cli) ok(args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("mover %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// fails runs a command that must fail with code and one line on stderr
// containing want.
func (c *cli) fails(code int, want string, args ...string) {
	c.t.Helper()
	r := c.run(args...)
	if r.code != code {
		c.t.Fatalf("mover %s: exit %d, want %d (stderr %q)", strings.Join(args, " "), r.code, code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	var errLines []string
	for _, l := range lines {
		if strings.HasPrefix(l, "mover: ") && !strings.HasPrefix(l, "mover: warning") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 {
		c.t.Fatalf("mover %s: want one error line, got %q", strings.Join(args, " "), r.stderr)
	}
	if !strings.Contains(errLines[0], want) {
		c.t.Fatalf("mover %s: error %q does not mention %q", strings.Join(args, " "), errLines[0], want)
	}
}

func newCLI(t *testing.T) (*cli, string) {
	dir := t.TempDir()
	return &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": filepath.Join(dir, "repo")}}, dir
}

func makeImage(t *testing.T, path string, size int64) { t.Helper(); makeImageSeed(t, path, size, 4) }

func makeImageSeed(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	os.Remove(path) // a new image in place of an old one
	if _, err := bench.GenerateFile(context.Background(), path, bench.Spec{Size: size, Seed: seed, Zero: 0.3, Duplicate: 0.2, RegionSize: 1 << 20}, nil, true); err != nil {
		t.Fatal(err)
	}
}

func TestCLIRoundTrip(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 24<<20)
	c.ok("init", "--segment-size", "8MiB")
	r := c.ok("export", "--source", img, "--name", "v1", "--tag", "a=b", "--json")
	var ex map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &ex); err != nil {
		t.Fatalf("export --json stdout is not one JSON object: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{"snapshot", "volume", "size", "read_bytes", "zero_bytes", "new_bytes", "stored_bytes", "seconds"} {
		if _, ok := ex[k]; !ok {
			t.Errorf("export JSON lacks %q", k)
		}
	}
	// Progress goes to stderr as JSON lines when stderr is not a terminal.
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("progress line is not JSON: %q", l)
		}
	}
	out := filepath.Join(dir, "out.img")
	r = c.ok("import", "--snapshot", "latest:v1", "--target", out, "--json", "-q")
	var im map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &im); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"snapshot", "size", "written_bytes", "seconds"} {
		if _, ok := im[k]; !ok {
			t.Errorf("import JSON lacks %q", k)
		}
	}
	a, _ := os.ReadFile(img)
	b, _ := os.ReadFile(out)
	if !bytes.Equal(a, b) {
		t.Fatal("imported image differs")
	}
	r = c.ok("snapshots", "--json")
	var snaps []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil || len(snaps) != 1 || snaps[0]["volume"] != "v1" {
		t.Fatalf("snapshots --json: %v %s", err, r.stdout)
	}
	c.ok("check", "--read-data")
	// Keys: add one, open with it, remove it.
	pwFile := filepath.Join(dir, "pw2")
	os.WriteFile(pwFile, []byte("second\n"), 0o600)
	c.ok("key", "add", "--new-password-file", pwFile)
	c2 := &cli{t: t, env: map[string]string{"MOVER_REPOSITORY": c.env["MOVER_REPOSITORY"]}}
	r = c2.ok("key", "list", "--password-file", pwFile, "--json")
	var keys []map[string]any
	json.Unmarshal([]byte(r.stdout), &keys)
	if len(keys) != 2 {
		t.Fatalf("key list: %s", r.stdout)
	}
	var other string
	for _, k := range keys {
		if k["current"] == true {
			other = k["id"].(string)
		}
	}
	c2.fails(1, "in use", "key", "remove", other[:8], "--password-file", pwFile)
	c.ok("key", "remove", other[:8])
	c2.fails(exitLocked, "wrong password", "snapshots", "--password-file", pwFile)
}

// TestCLIBadInput: every subcommand with missing, conflicting or malformed
// flags gives one error line and a usage hint (exit 2), never a panic.
func TestCLIBadInput(t *testing.T) {
	c, dir := newCLI(t)
	c.ok("init")
	img := filepath.Join(dir, "v.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"export", "--source", img}, `"volume" not set`},
		{[]string{"export", "--name", "x"}, `"source" not set`},
		{[]string{"export", "--source", img, "--name", "x", "--tag", "novalue"}, "key=value"},
		{[]string{"export", "--source", img, "--name", "x", "--pack-size", "12 apples"}, "invalid size"},
		{[]string{"export", "--source", img, "--name", "x", "--pack-size", "1KiB"}, "--pack-size"},
		{[]string{"export", "--source", img, "--name", "x", "--workers", "-3"}, "--workers"},
		{[]string{"export", "--source", img, "--name", "x", "extra"}, "unknown command"},
		{[]string{"import", "--target", img}, `"snapshot" not set`},
		{[]string{"import", "--snapshot", "latest"}, `"target" not set`},
		{[]string{"init", "--chunker", "rabin"}, "--chunker"},
		{[]string{"init", "--avg-size", "1000000"}, "power of two"},
		{[]string{"init", "--min-size", "lots"}, "invalid size"},
		{[]string{"check", "--read-data=maybe"}, "invalid argument"},
		{[]string{"key"}, "subcommand"},
		{[]string{"key", "remove"}, "accepts 1 arg"},
		{[]string{"snapshots", "--bogus"}, "unknown flag"},
		{[]string{"generate"}, "accepts 1 arg"},
		{[]string{"generate", "--zero", "0.9", "--file", "0.9", filepath.Join(dir, "g.img")}, "add up"},
		{[]string{"snapshots", "--key-file", img, "--password-file", img}, "exclude each other"},
		{[]string{"forget"}, "nothing to do"},
		{[]string{"forget", "--keep-last", "-1"}, "negative"},
		{[]string{"forget", "abc", "--keep-last", "1"}, "not both"},
		{[]string{"forget", "--keep-daily", "x"}, "invalid argument"},
		{[]string{"gc", "--grace", "soon"}, "invalid argument"},
		{[]string{"gc", "--grace", "-1h"}, "negative"},
		{[]string{"gc", "--repack-threshold", "2"}, "--repack-threshold"},
		{[]string{"gc", "extra"}, "unknown command"},
		{[]string{"repair"}, "subcommand"},
		{[]string{"repair", "everything"}, "unknown command"},
		{[]string{"export", "--source", img, "--name", "x", "--verify-unchanged", "2"}, "--verify-unchanged"},
		{[]string{"import", "--snapshot", "latest", "--target", img, "--assume-base", "a", "--verify-target"}, "none of the others"},
		{[]string{"init", "--pack-size", "0"}, "pack size"},
		// Numbers that size memory or goroutines have upper bounds;
		// fractions refuse NaN.
		{[]string{"export", "--source", img, "--name", "x", "--connections", "1000000000"}, "--connections 1000000000: want 1 to 256"},
		{[]string{"import", "--snapshot", "latest", "--target", img, "--connections", "1000000000"}, "--connections"},
		{[]string{"check", "--connections", "257"}, "--connections"},
		{[]string{"snapshots", "--connections", "-1"}, "--connections"},
		{[]string{"export", "--source", img, "--name", "x", "--workers", "1000000"}, "--workers 1000000: want 1 to 1024"},
		{[]string{"export", "--source", img, "--name", "x", "--verify-unchanged", "NaN"}, "--verify-unchanged NaN"},
		{[]string{"diff", "--workers", "100000", img, img}, "--workers"},
		{[]string{"generate", "--zero", "NaN", filepath.Join(dir, "g.img")}, "--zero NaN"},
		{[]string{"generate", "--duplicate", "-Inf", filepath.Join(dir, "g.img")}, "--duplicate"},
		{[]string{"init", "--repo", filepath.Join(dir, "r2"), "--object-lock-days", "100000000"}, "--object-lock-days"},
		// Volume names: 1 to 255 bytes, no "/", no control characters.
		{[]string{"export", "--source", img, "--name", ""}, "--volume: invalid volume name"},
		{[]string{"export", "--source", img, "--name", "ns/pvc"}, `contains "/"`},
		{[]string{"export", "--source", img, "--name", "a\nb"}, "control character"},
		{[]string{"export", "--source", img, "--name", strings.Repeat("v", 256)}, "longer than 255"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c.t = t
			c.fails(2, tc.want, tc.args...)
		})
	}
	c.t = t
	noRepo := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw"}}
	noRepo.fails(2, "no repository", "snapshots")
}

// TestCLIFailures: operational failures are one line and exit with their
// code (exitcodes.go), and leave the repository as it was.
func TestCLIFailures(t *testing.T) {
	c, dir := newCLI(t)
	repoDir := c.env["MOVER_REPOSITORY"]
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 16<<20)
	c.fails(exitNoRepository, "does not exist", "snapshots")
	c.ok("init")
	c.fails(exitExists, "already exists", "init")
	c.ok("export", "--source", img, "--name", "v", "-q")
	wrong := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "nope", "MOVER_REPOSITORY": repoDir}}
	wrong.fails(exitLocked, "wrong password", "snapshots")
	c.fails(exitUnsuitable, "no such file", "export", "--source", filepath.Join(dir, "missing.img"), "--name", "v")
	c.fails(exitUnsuitable, "not a block device or regular file", "export", "--source", dir, "--name", "v")
	c.fails(exitNotFound, "snapshot not found", "import", "--snapshot", "deadbeef", "--target", filepath.Join(dir, "o.img"))
	c.fails(exitNotFound, "no snapshot of volume", "import", "--snapshot", "latest:other", "--target", filepath.Join(dir, "o.img"))
	small := filepath.Join(dir, "not-a-dir", "x")
	c.fails(exitUnsuitable, "opening target", "import", "--snapshot", "latest", "--target", small, "--create=false")
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	c.fails(exitLocked, "is empty", "snapshots", "--password-file", empty)
	c.ok("check", "--read-data")
}

// objects returns the repository's files under sub, sorted.
func objects(t *testing.T, repoDir, sub string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(repoDir, sub), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	if len(out) == 0 {
		t.Fatalf("no objects under %s", sub)
	}
	return out
}

func flipByte(t *testing.T, path string, at func(n int) int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at(len(b))] ^= 0x01
	// Objects are read-only once written; replace the file.
	os.Remove(path)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCLIDamage flips one bit in a pack, an index file and a snapshot, and
// truncates a pack: check --read-data names the damaged object, import
// fails with one line, and nothing else is harmed.
func TestCLIDamage(t *testing.T) {
	errorLines := func(stderr string) int {
		n := 0
		for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
			if !strings.HasPrefix(l, "mover: warning: ") {
				n++
			}
		}
		return n
	}
	tests := []struct {
		name   string
		sub    string
		damage func(t *testing.T, path string)
		check  string // what check --read-data must name
		verb   []string
	}{
		{"pack bit", "data", func(t *testing.T, p string) { flipByte(t, p, func(n int) int { return n / 3 }) }, "authentication failed", nil},
		{"pack header bit", "data", func(t *testing.T, p string) { flipByte(t, p, func(n int) int { return n - 20 }) }, "pack header", nil},
		{"truncated pack", "data", func(t *testing.T, p string) {
			b, _ := os.ReadFile(p)
			os.Remove(p)
			os.WriteFile(p, b[:len(b)/2], 0o600)
		}, "beyond the pack", nil},
		{"index bit", "index", func(t *testing.T, p string) { flipByte(t, p, func(n int) int { return n / 2 }) }, "does not match its name", nil},
		{"snapshot bit", "snapshots", func(t *testing.T, p string) { flipByte(t, p, func(n int) int { return n / 2 }) }, "does not match its name", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, dir := newCLI(t)
			repoDir := c.env["MOVER_REPOSITORY"]
			img := filepath.Join(dir, "vol.img")
			makeImage(t, img, 24<<20)
			c.ok("init", "--pack-size", "2MiB")
			c.ok("export", "--source", img, "--name", "v", "-q")
			victim := objects(t, repoDir, tc.sub)[0]
			tc.damage(t, victim)
			r := c.run("check", "--read-data")
			if r.code != 1 {
				t.Fatalf("check after damage: exit %d\n%s", r.code, r.stdout)
			}
			rel, _ := filepath.Rel(repoDir, victim)
			for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				if strings.HasPrefix(line, "error: ") && !strings.Contains(line, rel) && !strings.HasPrefix(line, "error: snapshots/") {
					t.Errorf("check blames another object: %s", line)
				}
			}
			if !strings.Contains(r.stdout, rel) || !strings.Contains(r.stdout, tc.check) {
				t.Fatalf("check does not name %s with %q:\n%s", rel, tc.check, r.stdout)
			}
			// Import must fail cleanly (or, for a pack whose damaged blob
			// the snapshot does not need, succeed byte-identically).
			out := filepath.Join(dir, "out.img")
			r = c.run("import", "--snapshot", "latest", "--target", out, "-q")
			if r.code == 0 {
				a, _ := os.ReadFile(img)
				b, _ := os.ReadFile(out)
				if !bytes.Equal(a, b) {
					t.Fatal("import of a damaged repository succeeded with wrong data")
				}
			} else if (r.code != 1 && !(tc.sub == "snapshots" && r.code == exitNotFound)) || errorLines(r.stderr) != 1 {
				t.Fatalf("import: exit %d, stderr %q", r.code, r.stderr)
			}
			if tc.sub == "index" && !strings.Contains(r.stderr, "repair index") {
				t.Fatalf("import with a damaged index file does not point at repair index: %q", r.stderr)
			}
		})
	}
}

func TestCLINewerFormatAndHostileKey(t *testing.T) {
	c, _ := newCLI(t)
	repoDir := c.env["MOVER_REPOSITORY"]
	c.ok("init")
	cfg := filepath.Join(repoDir, "config")
	b, _ := os.ReadFile(cfg)
	var m map[string]any
	json.Unmarshal(b, &m)
	m["version"] = repo.FormatVersion + 1
	nb, _ := json.Marshal(m)
	os.Remove(cfg)
	os.WriteFile(cfg, nb, 0o600)
	c.fails(exitNewerFormat, "upgrade mover", "snapshots")
	os.Remove(cfg)
	os.WriteFile(cfg, b, 0o600)

	// A hostile key file is named by its hash, as a key file must be (a
	// mismatch is reported as damage, TestCLIKeyFileDamage).
	key := objects(t, repoDir, "keys")[0]
	kb, _ := os.ReadFile(key)
	json.Unmarshal(kb, &m)
	m["n"] = 1 << 40
	nb, _ = json.Marshal(m)
	os.Remove(key)
	sum := blake3.Sum256(nb)
	os.WriteFile(filepath.Join(filepath.Dir(key), hex.EncodeToString(sum[:])), nb, 0o600)
	c.fails(1, "memory", "snapshots")
}
