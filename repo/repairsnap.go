package repo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
)

// Range is a byte range of a volume.
type Range struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// SnapshotDamage lists what one snapshot needs and the repository cannot
// give.
type SnapshotDamage struct {
	Snapshot      ID      `json:"snapshot"`
	Volume        string  `json:"volume"`
	MissingPages  []int   `json:"missing_pages,omitempty"`
	MissingChunks []ID    `json:"missing_chunks,omitempty"`
	MissingBytes  int64   `json:"missing_bytes"`
	Ranges        []Range `json:"ranges,omitempty"` // the volume's bytes that cannot be restored
	Err           string  `json:"error,omitempty"`  // the snapshot itself is unreadable
}

// DamageOptions choose how deep DamagedSnapshots looks.
type DamageOptions struct {
	// ReadData reads and verifies every chunk (decrypt, decompress, hash);
	// without it a chunk counts as present when the index places it in a
	// pack that exists.
	ReadData bool
}

// DamagedSnapshots reports every snapshot that cannot be restored whole,
// and which of its byte ranges are lost: an unreadable snapshot file, a page
// that does not load, a chunk in no existing pack (the index keeps only
// entries of packs that exist) or, with ReadData, one that does not
// verify. It changes nothing.
func (r *Repository) DamagedSnapshots(ctx context.Context, opts DamageOptions) ([]SnapshotDamage, error) {
	ids, err := r.SnapshotIDs(ctx)
	if err != nil {
		return nil, err
	}
	o := r.NewBlobOpener()
	verdict := map[ID]bool{} // chunk → present (ReadData)
	var buf []byte
	present := func(id ID) (bool, error) {
		if !opts.ReadData {
			_, ok := r.Lookup(id)
			return ok, nil
		}
		if ok, seen := verdict[id]; seen {
			return ok, nil
		}
		var err error
		buf, err = r.LoadBlob(ctx, o, id, buf[:0])
		if err != nil && !isBlobDamage(err) {
			return false, err
		}
		verdict[id] = err == nil
		return err == nil, nil
	}
	var out []SnapshotDamage
	for _, id := range ids {
		d := SnapshotDamage{Snapshot: id}
		s, err := r.LoadSnapshot(ctx, id)
		if errors.Is(err, backend.ErrNotFound) {
			continue // forgotten meanwhile
		}
		if err != nil {
			if !damage(err) {
				return nil, err
			}
			d.Err = err.Error()
			out = append(out, d)
			continue
		}
		d.Volume = s.Volume
		for i := range s.Pages {
			start, end := s.PageRange(i)
			entries, err := r.LoadPage(ctx, o, s, i)
			if err != nil {
				if !isBlobDamage(err) {
					return nil, err
				}
				d.MissingPages = append(d.MissingPages, i)
				d.lose(start, end-start)
				continue
			}
			off := start
			for _, e := range entries {
				if !e.Hole {
					ok, err := present(e.ID)
					if err != nil {
						return nil, err
					}
					if !ok {
						d.MissingChunks = append(d.MissingChunks, e.ID)
						d.lose(off, e.Length)
					}
				}
				off += e.Length
			}
		}
		if len(d.MissingPages) > 0 || len(d.MissingChunks) > 0 {
			out = append(out, d)
		}
	}
	return out, nil
}

// isBlobDamage reports whether err from loading a blob means the blob is
// lost (missing, damaged), not that reading it failed for now.
func isBlobDamage(err error) bool {
	var be *BlobError
	if !errors.As(err, &be) {
		return damage(err)
	}
	return damage(err) || errors.Is(err, ErrIDMismatch) || errors.Is(err, ErrBlobMissing) ||
		errors.Is(err, backend.ErrNotFound) || errors.Is(err, backend.ErrInvalidRange)
}

// lose adds n bytes at off to the damaged ranges, merging with the last.
func (d *SnapshotDamage) lose(off, n int64) {
	d.MissingBytes += n
	if k := len(d.Ranges); k > 0 && d.Ranges[k-1].Offset+d.Ranges[k-1].Length == off {
		d.Ranges[k-1].Length += n
		return
	}
	d.Ranges = append(d.Ranges, Range{Offset: off, Length: n})
}

// Repaired records, in a snapshot written by RepairSnapshot, what was lost.
type Repaired struct {
	From    ID      `json:"from"`    // the damaged snapshot it replaces
	Time    string  `json:"time"`    // when it was repaired
	Damaged []Range `json:"damaged"` // ranges that restore as zeros instead of their data
}

// RepairSnapshots replaces each damaged snapshot (from DamagedSnapshots)
// with a copy in which every lost range (d.Ranges) is a hole, so that it
// restores with zeros there and its other data intact; the copy records
// the lost ranges (Snapshot.Repaired), and the damaged snapshot is deleted
// once the copy is saved. Snapshots whose file is unreadable cannot be
// repaired (forget them); RepairSnapshots refuses before changing anything
// if d lists one. It holds the maintenance lease (staleLease: see
// LeaseOptions.Stale). A kill between writing a copy and deleting its
// original leaves both: the copy is complete, and running it again
// replaces the original again.
func (r *Repository) RepairSnapshots(ctx context.Context, damaged []SnapshotDamage, staleLease time.Duration) ([]*Snapshot, error) {
	for _, d := range damaged {
		if d.Err != "" {
			return nil, fmt.Errorf("snapshot %s is unreadable and cannot be repaired: forget it (%s)", d.Snapshot.Short(), d.Err)
		}
	}
	if len(damaged) == 0 {
		return nil, nil
	}
	lease, err := r.AcquireLease(ctx, LeaseOptions{Stale: staleLease, Purpose: "repair snapshots"})
	if err != nil {
		return nil, fmt.Errorf("repair snapshots: %w", err)
	}
	defer lease.Release(ctx)
	// Copies a killed earlier run wrote: their originals only need deleting.
	copies := map[ID]*Snapshot{}
	ids, err := r.SnapshotIDs(ctx)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if s, err := r.LoadSnapshot(ctx, id); err == nil && s.Repaired != nil {
			copies[s.Repaired.From] = s
		}
	}
	var out []*Snapshot
	for _, d := range damaged {
		if err := lease.Check(ctx); err != nil {
			return out, fmt.Errorf("repair snapshots: %w", err)
		}
		if c := copies[d.Snapshot]; c != nil {
			if err := r.DeleteSnapshot(ctx, d.Snapshot); err != nil && !errors.Is(err, ErrSnapshotNotFound) {
				return out, err
			}
			out = append(out, c)
			continue
		}
		s, err := r.repairSnapshot(ctx, d)
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (r *Repository) repairSnapshot(ctx context.Context, d SnapshotDamage) (*Snapshot, error) {
	s, err := r.LoadSnapshot(ctx, d.Snapshot)
	if err != nil {
		return nil, err
	}
	o := r.NewBlobOpener()
	lost := map[ID]bool{}
	for _, id := range d.MissingChunks {
		lost[id] = true
	}
	missingPage := map[int]bool{}
	for _, i := range d.MissingPages {
		missingPage[i] = true
	}
	c := *s
	c.Pages = make([]ID, len(s.Pages))
	for i := range s.Pages {
		start, end := s.PageRange(i)
		var entries []Entry
		if missingPage[i] {
			entries = []Entry{{Length: end - start, Hole: true}}
		} else if entries, err = r.LoadPage(ctx, o, s, i); err != nil {
			return nil, err
		}
		changed := missingPage[i]
		for k, e := range entries {
			if !e.Hole && lost[e.ID] {
				entries[k] = Entry{Length: e.Length, Hole: true}
				changed = true
			}
		}
		if !changed {
			c.Pages[i] = s.Pages[i]
			continue
		}
		if c.Pages[i], err = r.SavePage(ctx, mergeHoles(entries)); err != nil {
			return nil, err
		}
	}
	if err := r.Flush(ctx); err != nil {
		return nil, err
	}
	c.Repaired = &Repaired{From: s.ID, Time: time.Now().UTC().Format(time.RFC3339), Damaged: d.Ranges}
	if err := r.SaveSnapshot(ctx, &c); err != nil {
		return nil, err
	}
	if err := r.DeleteSnapshot(ctx, s.ID); err != nil && !errors.Is(err, ErrSnapshotNotFound) {
		return nil, err
	}
	return &c, nil
}

// mergeHoles joins adjacent holes.
func mergeHoles(entries []Entry) []Entry {
	out := entries[:0]
	for _, e := range entries {
		if n := len(out); n > 0 && e.Hole && out[n-1].Hole {
			out[n-1].Length += e.Length
			continue
		}
		out = append(out, e)
	}
	return out
}
