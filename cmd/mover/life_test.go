package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// TestCLIForgetGCSize: after forget and gc (with the grace passed), the
// repository is within 5% of a fresh repository holding only what is left.
func TestCLIForgetGCSize(t *testing.T) {
	c, dir := newCLI(t)
	repoDir := c.env["MOVER_REPOSITORY"]
	var imgs []string
	for i := range 3 {
		img := filepath.Join(dir, "v.img")
		img = img[:len(img)-4] + string(rune('0'+i)) + ".img"
		f, _ := os.Create(img)
		f.Close()
		makeImageSeed(t, img, 24<<20, uint64(10+i))
		imgs = append(imgs, img)
	}
	c.ok("init", "--pack-size", "2MiB")
	base := dirBytes(t, repoDir) // config and key
	var stored []int64
	for i, img := range imgs {
		r := c.ok("export", "-q", "--json", "--source", img, "--name", "vol"+string(rune('0'+i)))
		var ex exportJSON
		json.Unmarshal([]byte(r.stdout), &ex)
		stored = append(stored, ex.StoredBytes)
	}
	// Keep only vol1: forget by policy per volume and by ID.
	r := c.ok("forget", "--name", "vol0", "--keep-last", "1", "--json")
	var fj forgetJSON
	json.Unmarshal([]byte(r.stdout), &fj)
	if len(fj.Removed) != 0 || len(fj.Kept) != 1 {
		t.Fatalf("forget --keep-last 1 of one snapshot: %s", r.stdout)
	}
	c.ok("forget", "latest:vol0")
	c.ok("forget", "latest:vol2")
	t.Log(c.ok("gc", "--grace", "0", "--json").stdout)
	c.ok("check", "--read-data")
	got := dirBytes(t, repoDir)
	// A fresh export of what is left, with this repository's chunking
	// (another repository draws another polynomial): vol1's data was all
	// new when it was exported.
	want := base + stored[1]
	t.Logf("after forget+gc: %d bytes; fresh export of what is left: %d bytes", got, want)
	if got > want*105/100 {
		t.Fatalf("repository is %d bytes after gc, more than 5%% over a fresh one's %d", got, want)
	}
	out := filepath.Join(dir, "out.img")
	c.ok("import", "-q", "--snapshot", "latest:vol1", "--target", out)
	a, _ := os.ReadFile(imgs[1])
	b, _ := os.ReadFile(out)
	if !bytes.Equal(a, b) {
		t.Fatal("import after gc differs")
	}
}

// TestCLIRepairIndex: delete every index file, repair, then check and
// import pass.
func TestCLIRepairIndex(t *testing.T) {
	c, dir, repoDir, img := exportedRepo(t)
	for _, f := range objects(t, repoDir, "index") {
		os.Remove(f)
	}
	c.fails(1, "not in the index", "import", "-q", "--snapshot", "latest", "--target", filepath.Join(dir, "x.img"))
	r := c.run("repair", "snapshots")
	if r.code != 1 || !bytes.Contains([]byte(r.stdout), []byte("missing")) {
		t.Fatalf("repair snapshots on a repository without index: exit %d\n%s", r.code, r.stdout)
	}
	c.ok("repair", "index")
	c.ok("repair", "snapshots")
	c.ok("check", "--read-data")
	out := filepath.Join(dir, "out.img")
	c.ok("import", "-q", "--snapshot", "latest", "--target", out)
	a, _ := os.ReadFile(img)
	b, _ := os.ReadFile(out)
	if !bytes.Equal(a, b) {
		t.Fatal("import after repair differs")
	}
}

// TestCLIExportAfterLostPack: when a pack is lost, the next export must
// not deduplicate against it (it stores the data again), and its snapshot
// imports byte-identically; the old snapshot, whose chunks are stored
// again under the same IDs, is whole again.
func TestCLIExportAfterLostPack(t *testing.T) {
	c, dir, repoDir, img := exportedRepo(t)
	os.Remove(objects(t, repoDir, "data")[0])
	r := c.ok("export", "-q", "--source", img, "--name", "v")
	if !bytes.Contains([]byte(r.stderr), []byte("do not exist")) {
		t.Errorf("export over a lost pack did not warn: %q", r.stderr)
	}
	if !importsSame(c, dir, "latest:v", img) {
		t.Fatal("the export after a lost pack imports different bytes")
	}
	if r := c.ok("repair", "snapshots", "--read-data"); !bytes.Contains([]byte(r.stdout), []byte("every snapshot can be restored whole")) {
		t.Fatalf("repair snapshots:\n%s", r.stdout)
	}
	c.ok("gc", "--grace", "0s")
	c.ok("check", "--read-data")
}

// TestCLIRepairDamagedHeader: one byte flipped in a pack's header; repair
// index keeps the pack's blobs (they verify), and the snapshot still
// imports byte-identically.
func TestCLIRepairDamagedHeader(t *testing.T) {
	c, dir, repoDir, img := exportedRepo(t)
	flipByte(t, objects(t, repoDir, "data")[0], func(n int) int { return n - 20 })
	r := c.ok("repair", "index")
	if !bytes.Contains([]byte(r.stdout), []byte("header unreadable")) || !bytes.Contains([]byte(r.stdout), []byte("lost 0")) {
		t.Fatalf("repair index:\n%s", r.stdout)
	}
	c.ok("repair", "snapshots", "--read-data")
	if !importsSame(c, dir, "latest:v", img) {
		t.Fatal("import after repair index differs")
	}
}

// TestCLIRepairSnapshotsWriteRepaired: a lost pack makes a snapshot
// damaged; repair snapshots names it and the lost ranges and changes
// nothing, gc refuses to delete, and --write-repaired replaces it by a copy
// that restores every other byte, with zeros in the lost ranges.
func TestCLIRepairSnapshotsWriteRepaired(t *testing.T) {
	c, dir, repoDir, img := exportedRepo(t)
	os.Remove(objects(t, repoDir, "data")[0])
	c.fails(1, "cannot be restored whole", "repair", "snapshots")
	c.fails(1, "no existing pack", "gc", "--grace", "0s")
	r := c.ok("repair", "snapshots", "--write-repaired", "--json")
	var res struct {
		Damaged []struct {
			Ranges []struct{ Offset, Length int64 }
		}
		Repaired []string
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.Repaired) != 1 || len(res.Damaged[0].Ranges) == 0 {
		t.Fatalf("repair snapshots --write-repaired: %v\n%s", err, r.stdout)
	}
	out := filepath.Join(dir, "out.img")
	c.ok("import", "-q", "--snapshot", "latest:v", "--target", out)
	want, _ := os.ReadFile(img)
	got, _ := os.ReadFile(out)
	for _, rg := range res.Damaged[0].Ranges {
		clear(want[rg.Offset : rg.Offset+rg.Length])
	}
	if !bytes.Equal(want, got) {
		t.Fatal("the repaired snapshot does not restore every byte outside the lost ranges, and zeros in them")
	}
	if r := c.ok("snapshots"); !strings.Contains(r.stdout, "REPAIRED(") {
		t.Fatalf("mover snapshots does not mark the repaired copy:\n%s", r.stdout)
	}
	c.ok("gc", "--grace", "0s")
	c.ok("check", "--read-data")
}

// exportedRepo is a directory repository (2 MiB packs) holding one export
// of a 24 MiB image as volume v.
func exportedRepo(t *testing.T) (c *cli, dir, repoDir, img string) {
	t.Helper()
	c, dir = newCLI(t)
	repoDir = c.env["MOVER_REPOSITORY"]
	img = filepath.Join(dir, "vol.img")
	makeImage(t, img, 24<<20)
	c.ok("init", "--pack-size", "2MiB")
	c.ok("export", "-q", "--source", img, "--name", "v")
	return c, dir, repoDir, img
}

// importsSame imports snapshot ref into a new file and compares it with img.
func importsSame(c *cli, dir, ref, img string) bool {
	c.t.Helper()
	out := filepath.Join(dir, "out.img")
	os.Remove(out)
	c.ok("import", "-q", "--snapshot", ref, "--target", out)
	a, _ := os.ReadFile(img)
	b, _ := os.ReadFile(out)
	return bytes.Equal(a, b)
}
