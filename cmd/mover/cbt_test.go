package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestCLIIncremental: mover diff finds what changed, export --base
// --changes reads only that, and import --assume-base writes only what
// differs; both byte-identical.
func TestCLIIncremental(t *testing.T) {
	c, dir := newCLI(t)
	base := filepath.Join(dir, "base.img")
	makeImage(t, base, 48<<20)
	c.ok("init")
	c.ok("export", "-q", "--source", base, "--name", "v")
	cur := filepath.Join(dir, "cur.img")
	data, _ := os.ReadFile(base)
	for _, off := range []int{100, 20 << 20, 40<<20 + 7} {
		for i := range 3000 {
			data[off+i] ^= 0x5a
		}
	}
	os.WriteFile(cur, data, 0o600)

	r := c.ok("diff", base, cur)
	changes := filepath.Join(dir, "changes.json")
	os.WriteFile(changes, []byte(r.stdout), 0o600)
	var sm struct {
		Blocks []any `json:"block_metadata"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sm); err != nil || len(sm.Blocks) != 3 {
		t.Fatalf("diff output: %v %s", err, r.stdout)
	}
	r = c.ok("export", "-q", "--json", "--source", cur, "--name", "v", "--base", "latest:v", "--changes", changes, "--verify-unchanged", "0.05")
	var ex exportJSON
	json.Unmarshal([]byte(r.stdout), &ex)
	t.Logf("incremental: read %d, stored %d, reused %d", ex.ReadBytes, ex.StoredBytes, ex.ReusedBytes)
	if ex.ReadBytes > 16<<20 {
		t.Fatalf("incremental export read %d bytes for 9 KB of changes", ex.ReadBytes)
	}
	if ex.Parent == "" {
		t.Fatal("incremental snapshot has no parent")
	}
	replica := filepath.Join(dir, "replica.img")
	c.ok("import", "-q", "--snapshot", ex.Parent[:12], "--target", replica)
	r = c.ok("import", "-q", "--json", "--snapshot", ex.Snapshot, "--target", replica, "--assume-base", ex.Parent)
	var im importJSON
	json.Unmarshal([]byte(r.stdout), &im)
	if im.WrittenBytes > 8<<20 {
		t.Fatalf("incremental import wrote %d bytes", im.WrittenBytes)
	}
	got, _ := os.ReadFile(replica)
	if !bytes.Equal(got, data) {
		t.Fatal("incremental import is not byte-identical")
	}
	c.fails(2, "need --base", "export", "--source", cur, "--name", "v", "--changes", changes)
	c.fails(1, "invalid change list", "export", "--source", cur, "--name", "v", "--base", "latest:v", "--changes", base)
	c.fails(2, "accepts 2 arg", "diff", base)
}
