package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
)

// agree fails unless ReadSummaries lists the snapshots ReadSnapshots reads,
// field by field except the page lists, in the same order, and returns the
// listing.
func agree(t *testing.T, r *Repository) *SnapshotList {
	t.Helper()
	ctx := context.Background()
	full, damaged, err := r.ReadSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, err := r.ReadSummaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Snapshots) != len(full) || len(list.Damaged) != len(damaged) {
		t.Fatalf("summaries list %d snapshots and %d damaged, the files %d and %d", len(list.Snapshots), len(list.Damaged), len(full), len(damaged))
	}
	for i, s := range list.Snapshots {
		if s.Pages != nil {
			t.Fatalf("summary %s holds pages", s.ID.Short())
		}
		if !sameSummary(s, full[i]) {
			t.Fatalf("snapshot %d: summary %+v, file %+v", i, s, full[i])
		}
	}
	return list
}

// TestSummariesAgreeWithSnapshots: every field a listing shows comes from
// the summary equal to the snapshot file's, for snapshots with tags,
// parents, stats and several volumes; a listing reads no snapshot file.
func TestSummariesAgreeWithSnapshots(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t)
	_, base := writeBlobs(t, r, 2)
	if err := r.DeleteSnapshot(ctx, base.ID); err != nil {
		t.Fatal(err)
	}
	var parent *ID
	for i := range 6 {
		s := &Snapshot{Volume: fmt.Sprintf("vol-%d", i%3), Source: "/dev/x", Hostname: "h",
			Time: time.Date(2026, 12, 3, 10, i, 0, 0, time.UTC), Tags: map[string]string{"n": fmt.Sprint(i)},
			Parent: parent, Size: base.Size, SegmentSize: base.SegmentSize, Pages: base.Pages,
			Stats: SnapshotStats{ReadBytes: int64(i), StoredBytes: int64(100 * i), Chunks: 3, Seconds: 0.5}}
		if err := r.SaveSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
		parent = &s.ID
	}
	list := agree(t, r)
	if len(list.Snapshots) != 6 || len(list.Unsummarized) != 0 || len(list.BadSummaries) != 0 {
		t.Fatalf("listing: %d snapshots, unsummarized %v, bad %v", len(list.Snapshots), list.Unsummarized, list.BadSummaries)
	}
	// A listing reads summaries only.
	counted := &countGets{Backend: be}
	r2 := reopen(t, counted, Options{NoIndex: true})
	if _, err := r2.ReadSummaries(ctx); err != nil {
		t.Fatal(err)
	}
	if n := counted.snapshots.Load(); n != 0 {
		t.Fatalf("the listing read %d snapshot files", n)
	}
	// latest reads the one snapshot it resolves to, in full.
	counted.snapshots.Store(0)
	s, err := r2.FindSnapshot(ctx, "latest:vol-1")
	if err != nil || s.Tags["n"] != "4" || len(s.Pages) != len(base.Pages) || counted.snapshots.Load() != 1 {
		t.Fatalf("latest:vol-1: %+v, %v, %d snapshot files read", s, err, counted.snapshots.Load())
	}
}

// countGets counts the reads of snapshot files.
type countGets struct {
	backend.Backend
	snapshots atomic.Int64
}

func (c *countGets) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if strings.HasPrefix(key, snapshotPrefix) {
		c.snapshots.Add(1)
	}
	return c.Backend.Get(ctx, key, off, n)
}

// TestDamagedSummaryFallsBack: a damaged summary, one moved from another
// snapshot, one disagreeing with its file and a missing one each fall back
// to the snapshot file; check reports the first three as errors and the
// missing one as a warning; RepairSummaries rewrites them, after which
// check is clean.
func TestDamagedSummaryFallsBack(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t)
	_, base := writeBlobs(t, r, 2)
	if err := r.DeleteSnapshot(ctx, base.ID); err != nil {
		t.Fatal(err)
	}
	var snaps []*Snapshot
	for i := range 5 {
		s := &Snapshot{Volume: "v", Time: time.Date(2026, 12, 3, 10, i, 0, 0, time.UTC), Size: base.Size, SegmentSize: base.SegmentSize, Pages: base.Pages}
		if err := r.SaveSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, s)
	}
	flip(t, be, summaryKey(snaps[0].ID), func(n int) int { return n / 2 })
	moved, err := backend.ReadAll(ctx, be, summaryKey(snaps[2].ID), 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	rewrite(t, be, summaryKey(snaps[1].ID), func([]byte) []byte { return moved })
	// A validly sealed summary whose file size disagrees with the file.
	wrong := *snaps[3]
	wrong.Volume = "other"
	data, err := r.encodeSummary(&wrong, 12345)
	if err != nil {
		t.Fatal(err)
	}
	rewrite(t, be, summaryKey(snaps[3].ID), func([]byte) []byte { return data })
	if err := be.Delete(ctx, summaryKey(snaps[4].ID)); err != nil {
		t.Fatal(err)
	}

	list := agree(t, r)
	if len(list.BadSummaries) != 3 || len(list.Unsummarized) != 1 || list.Unsummarized[0] != snaps[4].ID {
		t.Fatalf("bad %v, unsummarized %v", list.BadSummaries, list.Unsummarized)
	}
	res, err := r.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errs, warns := map[string]bool{}, map[string]bool{}
	for _, p := range res.Problems {
		if p.Warning {
			warns[p.Object] = true
		} else {
			errs[p.Object] = true
		}
	}
	for _, i := range []int{0, 1, 3} {
		if !errs[summaryKey(snaps[i].ID)] {
			t.Errorf("check does not report the summary of %s as an error: %v", snaps[i].ID.Short(), res.Problems)
		}
	}
	if !warns[summaryKey(snaps[4].ID)] || len(errs) != 3 {
		t.Errorf("check: %v", res.Problems)
	}

	n, err := r.RepairSummaries(ctx)
	if err != nil || n != 3 {
		t.Fatalf("RepairSummaries rewrote %d: %v", n, err)
	}
	list = agree(t, r)
	if len(list.BadSummaries)+len(list.Unsummarized) != 0 {
		t.Fatalf("after the repair: bad %v, unsummarized %v", list.BadSummaries, list.Unsummarized)
	}
	if res, err := r.Check(ctx, CheckOptions{}); err != nil || len(res.Problems) != 0 {
		t.Fatalf("check after the repair: %v %v", res, err)
	}
}

// TestForgetPolicyReadsKept: the policy is applied to summaries, and a
// kept snapshot whose file is damaged (its summary intact) is passed over
// for the next one, which is kept in its place.
func TestForgetPolicyReadsKept(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t)
	_, base := writeBlobs(t, r, 2)
	if err := r.DeleteSnapshot(ctx, base.ID); err != nil {
		t.Fatal(err)
	}
	var snaps []*Snapshot
	for i := range 4 {
		s := &Snapshot{Volume: "v", Time: time.Date(2026, 12, 3, 10, i, 0, 0, time.UTC), Size: base.Size, SegmentSize: base.SegmentSize, Pages: base.Pages}
		if err := r.SaveSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, s)
	}
	flip(t, be, snapshotPrefix+snaps[3].ID.String(), func(n int) int { return n / 2 })
	list, err := r.ReadSummaries(ctx)
	if err != nil || len(list.Snapshots) != 4 {
		t.Fatalf("%v %v", list, err)
	}
	decisions, damaged, err := r.ApplyPolicy(ctx, Policy{Last: 2}, list, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(damaged) != 1 || damaged[0].ID != snaps[3].ID || !errors.Is(damaged[0].Err, ErrAuth) {
		t.Fatalf("damaged %v", damaged)
	}
	kept := map[ID]bool{}
	for _, d := range decisions {
		if d.Keep {
			kept[d.Snapshot.ID] = true
		}
	}
	if len(decisions) != 3 || !kept[snaps[2].ID] || !kept[snaps[1].ID] || kept[snaps[0].ID] {
		t.Fatalf("decisions %+v", decisions)
	}
}

// copyDir copies the fixture repository dir into a new temporary
// directory, writable.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "repo")
	if out, err := exec.Command("cp", "-r", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if out, err := exec.Command("chmod", "-R", "u+w", dst).CombinedOutput(); err != nil {
		t.Fatalf("chmod: %v: %s", err, out)
	}
	return dst
}

// killAfter refuses every write and delete after the first n: the state a
// process killed after its nth write leaves (the refusals stop the run).
type killAfter struct {
	backend.Backend
	left atomic.Int64
}

var errKilled = errors.New("killed")

func (k *killAfter) Put(ctx context.Context, key string, data []byte) error {
	if k.left.Add(-1) < 0 {
		return errKilled
	}
	return k.Backend.Put(ctx, key, data)
}

func (k *killAfter) Delete(ctx context.Context, key string) error {
	if k.left.Add(-1) < 0 {
		return errKilled
	}
	return k.Backend.Delete(ctx, key)
}

var fixturePassword = []byte("fixture")

// TestMigrateV1Fixture: a format-1 repository written by the mover before
// summaries (testdata/v1repo) is read as it is, read-only (every snapshot
// listed from its file); its migration, killed after each of its writes,
// leaves a repository that lists the same snapshots and checks clean, and
// the next run finishes it. The config is never rewritten.
func TestMigrateV1Fixture(t *testing.T) {
	ctx := context.Background()
	open := func(t *testing.T, be backend.Backend) *Repository {
		t.Helper()
		r, err := Open(ctx, be, fixturePassword, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	ro := copyDir(t, filepath.Join("testdata", "v1repo"))
	be, err := fs.Open(ro)
	if err != nil {
		t.Fatal(err)
	}
	r := open(t, be)
	list := agree(t, r)
	if len(list.Snapshots) != 3 || len(list.Unsummarized) != 3 {
		t.Fatalf("the v1 fixture lists %d snapshots, %d unsummarized", len(list.Snapshots), len(list.Unsummarized))
	}
	if s := list.Snapshots[2]; s.Volume != "a" || s.Tags["kind"] != "second" || s.Parent == nil || *s.Parent != list.Snapshots[0].ID {
		t.Fatalf("the newest snapshot: %+v", s)
	}
	if res, err := r.Check(ctx, CheckOptions{ReadData: true}); err != nil || !res.OK() {
		t.Fatalf("check of the v1 fixture: %+v %v", res, err)
	}
	config, _ := os.ReadFile(filepath.Join(ro, "config"))

	// Three snapshots: three summary writes.
	for n := range 3 {
		t.Run(fmt.Sprintf("killed after %d", n), func(t *testing.T) {
			dir := copyDir(t, filepath.Join("testdata", "v1repo"))
			base, err := fs.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			k := &killAfter{Backend: base}
			k.left.Store(int64(n))
			if _, err := open(t, k).MigrateSummaries(ctx); !errors.Is(err, errKilled) {
				t.Fatalf("migration not stopped: %v", err)
			}
			r := open(t, base)
			list := agree(t, r)
			// At most n summaries were written (a put in flight when the
			// kill cancels the others may not have been).
			left := len(list.Unsummarized)
			if len(list.Snapshots) != 3 || left < 3-n {
				t.Fatalf("after the kill: %d snapshots, %d unsummarized", len(list.Snapshots), left)
			}
			if res, err := r.Check(ctx, CheckOptions{}); err != nil || !res.OK() {
				t.Fatalf("check after the kill: %+v %v", res, err)
			}
			st, err := r.MigrateSummaries(ctx)
			if err != nil || st.Written != left {
				t.Fatalf("the next run wrote %d: %v", st.Written, err)
			}
			list = agree(t, r)
			if len(list.Unsummarized)+len(list.BadSummaries) != 0 {
				t.Fatalf("after the next run: %+v", list)
			}
			if res, err := r.Check(ctx, CheckOptions{ReadData: true}); err != nil || len(res.Problems) != 0 {
				t.Fatalf("check after the migration: %+v %v", res, err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "config")); !bytes.Equal(got, config) {
				t.Fatal("the migration rewrote the config")
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "config")); !strings.Contains(string(got), `"version": 1`) {
				t.Fatalf("config: %s", got)
			}
		})
	}
}
