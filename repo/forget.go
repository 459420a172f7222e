package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/zeebo/blake3"
)

// Policy says which snapshots of a volume to keep, as restic's forget does:
// the Last newest, and the newest snapshot of each of the Daily, Weekly
// (ISO weeks) and Monthly most recent days, weeks and months that have
// snapshots. A snapshot kept by any rule is kept.
type Policy struct {
	Last, Daily, Weekly, Monthly int
}

// Empty reports whether the policy keeps nothing, which forget refuses.
func (p Policy) Empty() bool { return p.Last <= 0 && p.Daily <= 0 && p.Weekly <= 0 && p.Monthly <= 0 }

// Decision is what a policy decided for one snapshot.
type Decision struct {
	Snapshot *Snapshot
	Keep     bool
	Reasons  []string // the rules that keep it
}

// Apply decides for snaps (all of one volume, any order) and returns the
// decisions newest first.
func (p Policy) Apply(snaps []*Snapshot) []Decision {
	sorted := append([]*Snapshot(nil), snaps...)
	// Newest first; ties by ID so the result is deterministic.
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && newer(sorted[j], sorted[j-1]); j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	type rule struct {
		name   string
		left   int
		bucket func(time.Time) string
		last   string
	}
	rules := []*rule{
		{"last", p.Last, func(t time.Time) string { return "" }, "-"},
		{"daily", p.Daily, func(t time.Time) string { return t.Format("2006-01-02") }, ""},
		{"weekly", p.Weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-%02d", y, w) }, ""},
		{"monthly", p.Monthly, func(t time.Time) string { return t.Format("2006-01") }, ""},
	}
	out := make([]Decision, 0, len(sorted))
	for _, s := range sorted {
		d := Decision{Snapshot: s}
		t := s.Time.UTC()
		for _, r := range rules {
			if r.left <= 0 {
				continue
			}
			b := r.bucket(t)
			if r.name == "last" || b != r.last {
				d.Keep = true
				d.Reasons = append(d.Reasons, r.name)
				r.left--
				r.last = b
			}
		}
		out = append(out, d)
	}
	return out
}

// ApplyByVolume applies the policy to each volume's snapshots separately
// (only volume's, if it is not empty): what a retention run does. It
// returns the decisions volume by volume in name order, each volume's
// newest first.
func (p Policy) ApplyByVolume(snaps []*Snapshot, volume string) []Decision {
	byVol := map[string][]*Snapshot{}
	for _, s := range snaps {
		if volume == "" || s.Volume == volume {
			byVol[s.Volume] = append(byVol[s.Volume], s)
		}
	}
	vols := make([]string, 0, len(byVol))
	for v := range byVol {
		vols = append(vols, v)
	}
	slices.Sort(vols)
	var out []Decision
	for _, v := range vols {
		out = append(out, p.Apply(byVol[v])...)
	}
	return out
}

func newer(a, b *Snapshot) bool {
	if !a.Time.Equal(b.Time) {
		return a.Time.After(b.Time)
	}
	return a.ID.String() > b.ID.String()
}

// Forget deletes the snapshots ids while holding the maintenance lease
// (staleLease: see LeaseOptions.Stale), checking before each batch that it
// still holds it. A snapshot already gone counts as forgotten, so a rerun
// after a kill finishes the work. Their data stays until gc. It then
// migrates the repository's summaries (MigrateSummaries), also when ids
// is empty.
func (r *Repository) Forget(ctx context.Context, ids []ID, staleLease time.Duration) error {
	if len(ids) == 0 {
		// Still a write: it migrates (MigrateSummaries needs no lease).
		if _, err := r.MigrateSummaries(ctx); err != nil {
			return fmt.Errorf("forget: %w", err)
		}
		return nil
	}
	lease, err := r.AcquireLease(ctx, LeaseOptions{Stale: staleLease, Purpose: "forget"})
	if err != nil {
		return fmt.Errorf("forget: %w", err)
	}
	defer lease.Release(ctx)
	for i, id := range ids {
		if i%deleteBatch == 0 {
			if err := lease.Check(ctx); err != nil {
				return fmt.Errorf("forget: %w", err)
			}
		}
		if err := r.DeleteSnapshot(ctx, id); err != nil && !errors.Is(err, ErrSnapshotNotFound) {
			return err
		}
	}
	// Summaries of snapshots forgotten by an earlier, killed run, and of
	// snapshots an older mover wrote or forgot.
	if err := lease.Check(ctx); err != nil {
		return fmt.Errorf("forget: %w", err)
	}
	if _, err := r.MigrateSummaries(ctx); err != nil {
		return fmt.Errorf("forget: %w", err)
	}
	return nil
}

// DeleteSnapshot removes a snapshot object, then its summary (FORMAT.md,
// "Snapshot summaries": killed in between, the summary is an orphan that
// listings ignore and the next write removes). A snapshot already gone is
// an error wrapping ErrSnapshotNotFound, after its summary is removed too.
// Its data stays until gc. Prefer Forget, which holds the maintenance
// lease.
func (r *Repository) DeleteSnapshot(ctx context.Context, id ID) error {
	var gone error
	if err := r.be.Delete(ctx, snapshotPrefix+id.String()); err != nil {
		if !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("deleting snapshot %s: %w", id.Short(), err)
		}
		gone = fmt.Errorf("%w: %s", ErrSnapshotNotFound, id.Short())
	}
	if err := r.deleteSummary(ctx, id); err != nil {
		return err
	}
	return gone
}

// VerifySnapshotFile checks that snapshot file id is intact by streaming
// it through BLAKE3 against its name, holding none of it: an error
// wrapping ErrAuth if it is damaged, wrapping backend.ErrNotFound if it is
// gone. The name is the hash of the sealed bytes, which only a holder of
// the key could have written, so a file that matches it is the snapshot
// its summary was made from.
func (r *Repository) VerifySnapshotFile(ctx context.Context, id ID) error {
	rc, err := r.be.Get(ctx, snapshotPrefix+id.String(), 0, -1)
	if err != nil {
		return fmt.Errorf("reading snapshot %s: %w", id.Short(), err)
	}
	defer rc.Close()
	h := blake3.New()
	if _, err := io.Copy(h, rc); err != nil {
		return fmt.Errorf("reading snapshot %s: %w", id.Short(), err)
	}
	if ID(h.Sum(nil)) != id {
		return fmt.Errorf("snapshot %s: %w: content does not match its name", id.Short(), ErrAuth)
	}
	return nil
}

// ApplyPolicy applies p to the listed snapshots like ApplyByVolume, and
// reads the file of every snapshot it keeps (VerifySnapshotFile): a kept
// snapshot whose file is damaged joins the damaged ones and the policy is
// applied again without it, so that a damaged file never takes the place
// of an intact snapshot, while the snapshots it removes need not be read.
// It returns the decisions and every damaged snapshot file, list's and
// those found.
func (r *Repository) ApplyPolicy(ctx context.Context, p Policy, list *SnapshotList, volume string) ([]Decision, []UnreadableSnapshot, error) {
	snaps := slices.Clone(list.Snapshots)
	damaged := slices.Clone(list.Damaged)
	verified := map[ID]bool{}
	for {
		decisions := p.ApplyByVolume(snaps, volume)
		var todo []ID
		for _, d := range decisions {
			if d.Keep && !verified[d.Snapshot.ID] {
				todo = append(todo, d.Snapshot.ID)
			}
		}
		if len(todo) == 0 {
			return decisions, damaged, nil
		}
		errs := make([]error, len(todo))
		g, gctx := safego.WithContext(ctx)
		g.SetLimit(summaryReaders)
		for i, id := range todo {
			g.Go(func() error {
				err := r.VerifySnapshotFile(gctx, id)
				if err != nil && !errors.Is(err, ErrAuth) && !errors.Is(err, backend.ErrNotFound) {
					return err
				}
				errs[i] = err
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, nil, err
		}
		drop := map[ID]bool{}
		for i, id := range todo {
			switch err := errs[i]; {
			case err == nil:
				verified[id] = true
			case errors.Is(err, ErrAuth):
				damaged = append(damaged, UnreadableSnapshot{ID: id, Err: err})
				drop[id] = true
			default: // forgotten meanwhile
				drop[id] = true
			}
		}
		snaps = slices.DeleteFunc(snaps, func(s *Snapshot) bool { return drop[s.ID] })
	}
}
