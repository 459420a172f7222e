package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/blockmover/blockmover/repo/backend"
)

// TestCrashDuringKey kills key add and key remove after each of their
// writes and deletes, and leaves a key file torn inside its temporary
// file (a kill before the file was published). After each, with no manual
// step, the repository opens with the old password, checks clean and
// imports its snapshot byte-identically; a key that was added opens it
// too; and the rerun of the command succeeds.
func TestCrashDuringKey(t *testing.T) {
	base, dir := newCLI(t)
	base.ok("init")
	img := filepath.Join(dir, "v.img")
	makeImage(t, img, 2<<20)
	base.ok("export", "-q", "--source", img, "--volume", "v")
	tmpl := base.env["MOVER_REPOSITORY"]

	// fresh returns a client on a copy of repository src.
	fresh := func(t *testing.T, src string) *cli {
		c := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_NEW_PASSWORD": "second",
			"MOVER_REPOSITORY": filepath.Join(t.TempDir(), "r")}}
		copyRepo(t, src, c.env["MOVER_REPOSITORY"])
		return c
	}
	// whole checks what every kill must leave: the old password opens the
	// repository, check --read-data passes, v imports the same bytes and
	// no key file is damaged. It returns the key IDs.
	whole := func(t *testing.T, c *cli, what string) []string {
		t.Helper()
		if r := c.run("check", "--read-data"); r.code != 0 {
			t.Fatalf("%s: check fails:\n%s%s", what, r.stdout, r.stderr)
		}
		target := filepath.Join(t.TempDir(), "v.img")
		if r := c.run("import", "-q", "--snapshot", "latest:v", "--target", target); r.code != 0 {
			t.Fatalf("%s: import: %s", what, r.stderr)
		}
		want, _ := os.ReadFile(img)
		got, _ := os.ReadFile(target)
		if !bytes.Equal(want, got) {
			t.Fatalf("%s: v imports different bytes", what)
		}
		var keys []struct {
			ID      string
			Damaged string
		}
		r := c.ok("key", "list", "--json")
		if err := json.Unmarshal([]byte(r.stdout), &keys); err != nil {
			t.Fatalf("%s: key list --json: %v: %q", what, err, r.stdout)
		}
		var ids []string
		for _, k := range keys {
			if k.Damaged != "" {
				t.Fatalf("%s: key %s damaged: %s", what, k.ID, k.Damaged)
			}
			ids = append(ids, k.ID)
		}
		return ids
	}
	opensWith := func(c *cli, pw string) bool {
		o := &cli{t: c.t, env: map[string]string{"MOVER_PASSWORD": pw, "MOVER_REPOSITORY": c.env["MOVER_REPOSITORY"]}}
		return o.run("snapshots").code == 0
	}

	t.Run("add", func(t *testing.T) {
		ref := fresh(t, tmpl)
		_, ops, _ := ref.child(0, "key", "add")
		if ops < 1 {
			t.Fatalf("key add made %d writes", ops)
		}
		t.Logf("key add: %d writes", ops)
		for killAt := 1; killAt <= ops; killAt++ {
			c := fresh(t, tmpl)
			if killed, _, _ := c.child(killAt, "key", "add"); !killed {
				t.Fatalf("key add not killed after write %d of %d", killAt, ops)
			}
			what := "key add killed after write " + strconv.Itoa(killAt)
			ids := whole(t, c, what)
			if opens := opensWith(c, "second"); opens != (len(ids) == 2) {
				t.Fatalf("%s: %d keys listed, but the new password opens the repository: %v", what, len(ids), opens)
			}
			c.ok("key", "add") // the rerun
			if !opensWith(c, "second") {
				t.Fatalf("%s: after the rerun the new password does not open the repository", what)
			}
			whole(t, c, what+", then rerun")
		}
	})

	t.Run("torn", func(t *testing.T) {
		c := fresh(t, tmpl)
		keys := objects(t, c.env["MOVER_REPOSITORY"], "keys")
		b, err := os.ReadFile(keys[0])
		if err != nil {
			t.Fatal(err)
		}
		torn := filepath.Join(filepath.Dir(keys[0]), backend.TempPrefix+"123456")
		if err := os.WriteFile(torn, b[:len(b)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		if ids := whole(t, c, "a torn temporary key file"); len(ids) != 1 {
			t.Fatalf("a torn temporary key file: %d keys listed, want 1", len(ids))
		}
		c.ok("key", "add")
		if ids := whole(t, c, "a torn temporary key file, then key add"); len(ids) != 2 || !opensWith(c, "second") {
			t.Fatalf("a torn temporary key file, then key add: %d keys", len(ids))
		}
	})

	t.Run("remove", func(t *testing.T) {
		two := filepath.Join(t.TempDir(), "two")
		copyRepo(t, tmpl, two)
		c2 := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_NEW_PASSWORD": "second", "MOVER_REPOSITORY": two}}
		var added struct{ ID string }
		if err := json.Unmarshal([]byte(c2.ok("key", "add", "--json").stdout), &added); err != nil || added.ID == "" {
			t.Fatalf("key add --json: %v", err)
		}
		ref := fresh(t, two)
		_, ops, _ := ref.child(0, "key", "remove", added.ID[:8])
		if ops < 1 {
			t.Fatalf("key remove made %d deletes", ops)
		}
		t.Logf("key remove: %d writes and deletes", ops)
		for killAt := 1; killAt <= ops; killAt++ {
			c := fresh(t, two)
			if killed, _, _ := c.child(killAt, "key", "remove", added.ID[:8]); !killed {
				t.Fatalf("key remove not killed after delete %d of %d", killAt, ops)
			}
			what := "key remove killed after delete " + strconv.Itoa(killAt)
			ids := whole(t, c, what)
			if len(ids) == 2 {
				c.ok("key", "remove", added.ID[:8]) // the rerun finishes the work
				ids = whole(t, c, what+", then rerun")
			}
			if len(ids) != 1 || opensWith(c, "second") {
				t.Fatalf("%s: %d keys left, want the one in use", what, len(ids))
			}
		}
	})
}
