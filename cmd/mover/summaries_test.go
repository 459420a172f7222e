package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestChunkerKinds: a repository of each chunker kind, with the kind's
// default sizes and with explicit ones, exports, exports incrementally
// and imports byte-identically through the CLI (issue 18: `--chunker
// fixed` once divided by its zero minimum size in export).
func TestChunkerKinds(t *testing.T) {
	for _, tc := range []struct {
		name string
		init []string
	}{
		{"cdc", []string{"--chunker", "cdc"}},
		{"cdc sizes", []string{"--chunker", "cdc", "--min-size", "64KiB", "--avg-size", "128KiB", "--max-size", "512KiB"}},
		{"fixed", []string{"--chunker", "fixed"}},
		{"fixed size", []string{"--chunker", "fixed", "--fixed-size", "64KiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, dir := newCLI(t)
			c.ok(append([]string{"init"}, tc.init...)...)
			img := filepath.Join(dir, "v.img")
			makeImageSeed(t, img, 3<<20, 7)
			c.ok("export", "-q", "--source", img, "--volume", "v")
			b, _ := os.ReadFile(img)
			copy(b[1<<20:], bytes.Repeat([]byte{0x5a}, 4096))
			os.WriteFile(img, b, 0o600)
			c.ok("export", "-q", "--source", img, "--volume", "v", "--base", "latest:v")
			out := filepath.Join(dir, "out.img")
			c.ok("import", "-q", "--snapshot", "latest:v", "--target", out)
			if got, _ := os.ReadFile(out); !bytes.Equal(got, b) {
				t.Fatal("the import differs from the volume")
			}
			c.ok("check", "--read-data")
		})
	}
}

// snapshotFiles returns the IDs of a directory repository's snapshot
// files and of its summaries, sorted.
func snapshotFiles(t *testing.T, repoDir string) (snaps, sums []string) {
	t.Helper()
	for _, d := range []struct {
		sub string
		out *[]string
	}{{"snapshots", &snaps}, {"summaries", &sums}} {
		es, err := os.ReadDir(filepath.Join(repoDir, d.sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range es {
			if !strings.HasPrefix(e.Name(), ".tmp-") {
				*d.out = append(*d.out, e.Name())
			}
		}
		slices.Sort(*d.out)
	}
	return snaps, sums
}

// listsSnapshotFiles fails unless `mover snapshots --json` lists exactly
// the repository's snapshot files, none damaged.
func listsSnapshotFiles(t *testing.T, c *cli, when string) {
	t.Helper()
	r := c.ok("snapshots", "--json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("%s: snapshots --json: %v", when, err)
	}
	var ids []string
	for _, s := range list {
		if s["damaged"] != nil || s["volume"] == "" {
			t.Fatalf("%s: the listing has a damaged entry: %v", when, s)
		}
		ids = append(ids, s["id"].(string))
	}
	slices.Sort(ids)
	snaps, _ := snapshotFiles(t, c.env["MOVER_REPOSITORY"])
	if !slices.Equal(ids, snaps) {
		t.Fatalf("%s: snapshots lists %v, the repository holds %v", when, ids, snaps)
	}
}

// TestCrashDuringForgetWithSummaries kills forget after each write and
// delete, on a repository with summaries and on one written before them
// (no summaries/: forget migrates it). After each kill the listing shows
// exactly the snapshot files and check passes; after the rerun every
// snapshot has its summary and no summary is left without its snapshot.
func TestCrashDuringForgetWithSummaries(t *testing.T) {
	f := newMaintFixture(t)
	old := filepath.Join(t.TempDir(), "old")
	copyRepo(t, f.repo, old)
	if err := os.RemoveAll(filepath.Join(old, "summaries")); err != nil {
		t.Fatal(err)
	}
	keep := map[string]string{"a": f.images["a"], "b": f.images["b"], "c": f.images["c"]}
	cmd := []string{"forget", "--keep-last", "1"}
	for _, tmpl := range []struct{ name, dir string }{{"summaries", f.repo}, {"migrating", old}} {
		t.Run(tmpl.name, func(t *testing.T) {
			runCrashCase(t, f, crashCase{name: "forget (" + tmpl.name + ")", template: tmpl.dir, cmd: cmd, rerun: cmd,
				gc: []string{"gc", "--grace", "0s"}, keep: keep,
				killed: func(t *testing.T, c *cli, n int) {
					listsSnapshotFiles(t, c, "forget killed after write "+strconv.Itoa(n))
				},
				finished: func(t *testing.T, c *cli, n int) {
					snaps, sums := snapshotFiles(t, c.env["MOVER_REPOSITORY"])
					if !slices.Equal(snaps, sums) || len(snaps) != 3 {
						t.Fatalf("forget killed after write %d, rerun: snapshots %v, summaries %v", n, snaps, sums)
					}
					listsSnapshotFiles(t, c, "after the rerun")
				},
				exercised: func(t *testing.T, stdout string) {
					var res forgetJSON
					if json.Unmarshal([]byte(stdout), &res); len(res.Removed) != 1 {
						t.Fatalf("forget removed %d snapshots, want a's first: %s", len(res.Removed), stdout)
					}
				}})
		})
	}
}

// TestCrashDuringExportWithSummaries kills an export after each write
// (packs, index files published early for other writers, the snapshot,
// its summary and, on a repository written before summaries, the
// migration's summaries), by count rather than at random times as
// TestCrashDuringExport does. After each kill the listing shows exactly
// the snapshot files and check passes; after the rerun every snapshot has
// its summary and no summary is left without its snapshot.
func TestCrashDuringExportWithSummaries(t *testing.T) {
	f := newMaintFixture(t)
	old := filepath.Join(t.TempDir(), "old")
	copyRepo(t, f.repo, old)
	if err := os.RemoveAll(filepath.Join(old, "summaries")); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(f.dir, "d.img")
	os.WriteFile(img, nil, 0o600)
	makeImageSeed(t, img, 6<<20, 24)
	keep := map[string]string{"b": f.images["b"], "c": f.images["c"]}
	cmd := []string{"export", "-q", "--source", img, "--name", "d"}
	for _, tmpl := range []struct{ name, dir string }{{"summaries", f.repo}, {"migrating", old}} {
		t.Run(tmpl.name, func(t *testing.T) {
			runCrashCase(t, f, crashCase{name: "export (" + tmpl.name + ")", template: tmpl.dir, cmd: cmd, rerun: cmd,
				gc: []string{"gc", "--grace", "0s"}, keep: keep,
				killed: func(t *testing.T, c *cli, n int) {
					listsSnapshotFiles(t, c, "export killed after write "+strconv.Itoa(n))
				},
				finished: func(t *testing.T, c *cli, n int) {
					snaps, sums := snapshotFiles(t, c.env["MOVER_REPOSITORY"])
					if !slices.Equal(snaps, sums) || len(snaps) < 5 {
						t.Fatalf("export killed after write %d, rerun: snapshots %v, summaries %v", n, snaps, sums)
					}
					listsSnapshotFiles(t, c, "after the rerun")
				},
				exercised: func(t *testing.T, stdout string) {
					var res exportJSON
					if json.Unmarshal([]byte(stdout), &res); res.Snapshot == "" || res.NewBytes == 0 {
						t.Fatalf("export stored nothing new: %s", stdout)
					}
				}})
		})
	}
}

// TestCLIMigratesOldRepository: a repository written before summaries
// lists (from its snapshot files) without being written to; its next
// export summarizes every snapshot; check then reports no summary.
func TestCLIMigratesOldRepository(t *testing.T) {
	c, dir := newCLI(t)
	repoDir := c.env["MOVER_REPOSITORY"]
	c.ok("init")
	for i, vol := range []string{"a", "b"} {
		img := filepath.Join(dir, vol+".img")
		makeImageSeed(t, img, 1<<20, uint64(i))
		c.ok("export", "-q", "--source", img, "--volume", vol)
	}
	if err := os.RemoveAll(filepath.Join(repoDir, "summaries")); err != nil {
		t.Fatal(err)
	}
	listsSnapshotFiles(t, c, "without summaries")
	c.ok("forget", "--keep-last", "5", "--dry-run")
	if _, sums := snapshotFiles(t, repoDir); len(sums) != 0 {
		t.Fatalf("a read wrote summaries: %v", sums)
	}
	if r := c.ok("check"); !strings.Contains(r.stdout+r.stderr, "summaries/") {
		t.Fatalf("check does not report the missing summaries:\n%s%s", r.stdout, r.stderr)
	}
	c.ok("export", "-q", "--source", filepath.Join(dir, "a.img"), "--volume", "a")
	snaps, sums := snapshotFiles(t, repoDir)
	if len(snaps) != 3 || !slices.Equal(snaps, sums) {
		t.Fatalf("after an export: snapshots %v, summaries %v", snaps, sums)
	}
	if r := c.ok("check"); strings.Contains(r.stdout+r.stderr, "summaries/") {
		t.Fatalf("check still reports summaries:\n%s%s", r.stdout, r.stderr)
	}
	listsSnapshotFiles(t, c, "after the migration")
}
