package repo

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestCheckVolumeName: volume names that would break listings, latest:NAME
// references or file names are refused, by the library too.
func TestCheckVolumeName(t *testing.T) {
	for _, name := range []string{"pvc-data", "ns_a.pvc:1", "Datenträger", strings.Repeat("v", MaxVolumeName)} {
		if err := CheckVolumeName(name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	for _, name := range []string{"", "a/b", "/", "a\nb", "tab\there", "nul\x00", "del\x7f", "c1\u0085", strings.Repeat("v", MaxVolumeName+1), "\xff"} {
		if err := CheckVolumeName(name); !errors.Is(err, ErrInvalidVolumeName) {
			t.Errorf("%q accepted: %v", name, err)
		}
	}
	// The library refuses to write such a name.
	r, _ := newTestRepo(t)
	s := &Snapshot{Volume: "a/b", Size: 0, SegmentSize: r.Config().Chunking.SegmentSize}
	if err := r.SaveSnapshot(context.Background(), s); !errors.Is(err, ErrInvalidVolumeName) {
		t.Fatalf("saved a snapshot of volume %q: %v", s.Volume, err)
	}
}

// TestDamagedSnapshotStaysLocal: one damaged snapshot file neither hides
// the others nor blocks latest, nor its own removal by ID.
func TestDamagedSnapshotStaysLocal(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t)
	_, old := writeBlobs(t, r, 2)
	seg := r.Config().Chunking.SegmentSize
	save := func(vol string, at time.Time) *Snapshot {
		s := &Snapshot{Volume: vol, Time: at, Size: old.Size, SegmentSize: seg, Pages: old.Pages}
		if err := r.SaveSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now().UTC()
	a := save("a", now.Add(-2*time.Hour))
	b := save("b", now.Add(-time.Hour))
	newest := save("a", now)
	flip(t, be, snapshotPrefix+newest.ID.String(), func(n int) int { return n / 2 })

	snaps, damaged, err := r.ReadSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 3 || len(damaged) != 1 || damaged[0].ID != newest.ID || !errors.Is(damaged[0].Err, ErrAuth) {
		t.Fatalf("ReadSnapshots: %d readable, damaged %v", len(snaps), damaged)
	}
	if _, err := r.Snapshots(ctx); err == nil || !strings.Contains(err.Error(), newest.ID.String()) {
		t.Fatalf("Snapshots, which gc-like callers use, must fail on a damaged file: %v", err)
	}
	// The damaged file's summary says it is of volume a: "latest:b"
	// passes over nothing. Without the summary (a repository before
	// summaries) its volume is unknown, and every "latest" skips it.
	for ref, want := range map[string]ID{"latest": b.ID, "latest:a": a.ID, "latest:b": b.ID} {
		s, skipped, err := r.ResolveSnapshot(ctx, ref)
		wantSkipped := 1
		if ref == "latest:b" {
			wantSkipped = 0
		}
		if err != nil || s.ID != want || len(skipped) != wantSkipped || (wantSkipped == 1 && skipped[0].ID != newest.ID) {
			t.Fatalf("%s: %v, skipped %v, %v", ref, s, skipped, err)
		}
	}
	if err := be.Delete(ctx, summaryKey(newest.ID)); err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]ID{"latest": b.ID, "latest:a": a.ID, "latest:b": b.ID} {
		s, skipped, err := r.ResolveSnapshot(ctx, ref)
		if err != nil || s.ID != want || len(skipped) != 1 || skipped[0].ID != newest.ID {
			t.Fatalf("without its summary, %s: %v, skipped %v, %v", ref, s, skipped, err)
		}
	}
	if _, err := r.FindSnapshot(ctx, newest.ID.String()); !errors.Is(err, ErrAuth) {
		t.Fatalf("the damaged snapshot by ID: %v", err)
	}
	id, err := r.MatchSnapshotID(ctx, newest.ID.String()[:10])
	if err != nil || id != newest.ID {
		t.Fatalf("matching the damaged snapshot's prefix: %v %v", id, err)
	}
	if err := r.Forget(ctx, []ID{id}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Snapshots(ctx); err != nil {
		t.Fatalf("after forgetting the damaged snapshot: %v", err)
	}
}
