package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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

// TestCLINothingChanged: mover diff of a volume with itself prints an empty
// change list, and an export with it reads nothing but the sample that
// --verify-unchanged asks for (an empty list is "nothing changed", not "no
// change list"), and still makes a snapshot that imports byte-identically.
func TestCLINothingChanged(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "vol.img")
	const size = 40 << 20
	makeImage(t, img, size)
	c.ok("init")
	c.ok("export", "-q", "--source", img, "--name", "v")
	r := c.ok("diff", img, img)
	if !strings.Contains(r.stdout, `"block_metadata":[]`) {
		t.Fatalf("diff of a volume with itself: %s", r.stdout)
	}
	list := filepath.Join(dir, "changes.json")
	os.WriteFile(list, []byte(r.stdout), 0o600)
	for _, tc := range []struct {
		verify  string
		maxRead int64
	}{
		{"0", 0},
		{"0.05", size / 5}, // a random 5 % sample of the data chunks, with room
	} {
		r = c.ok("export", "-q", "--json", "--source", img, "--name", "v", "--base", "latest:v", "--changes", list, "--verify-unchanged", tc.verify)
		var ex exportJSON
		if err := json.Unmarshal([]byte(r.stdout), &ex); err != nil {
			t.Fatal(err)
		}
		t.Logf("--verify-unchanged %s: read %d, reused %d, stored %d", tc.verify, ex.ReadBytes, ex.ReusedBytes, ex.StoredBytes)
		if ex.ReadBytes > tc.maxRead {
			t.Fatalf("--verify-unchanged %s: an empty change list read %d of %d bytes, want at most %d", tc.verify, ex.ReadBytes, size, tc.maxRead)
		}
		if ex.Parent == "" || ex.NewBytes != 0 {
			t.Fatalf("--verify-unchanged %s: parent %q, %d new bytes", tc.verify, ex.Parent, ex.NewBytes)
		}
		out := filepath.Join(dir, "out-"+tc.verify+".img")
		c.ok("import", "-q", "--snapshot", ex.Snapshot, "--target", out)
		want, _ := os.ReadFile(img)
		if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
			t.Fatalf("--verify-unchanged %s: the snapshot does not import byte-identically", tc.verify)
		}
	}
}
