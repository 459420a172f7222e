package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo/backend"
)

// packMeta is what a listing says of a pack.
type packMeta struct {
	size int64
	mod  time.Time
}

// listPacks lists every pack object.
func (r *Repository) listPacks(ctx context.Context) (map[ID]packMeta, error) {
	packs := map[ID]packMeta{}
	err := r.be.List(ctx, dataPrefix, func(oi backend.ObjectInfo) error {
		id, err := ParseID(oi.Key[strings.LastIndexByte(oi.Key, '/')+1:])
		if err == nil && PackKey(id) == oi.Key {
			packs[id] = packMeta{size: oi.Size, mod: oi.ModTime}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing packs: %w", err)
	}
	return packs, nil
}

func (r *Repository) listIndexFiles(ctx context.Context) ([]string, error) {
	var names []string
	if err := r.be.List(ctx, indexPrefix, func(oi backend.ObjectInfo) error {
		names = append(names, oi.Key)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing index: %w", err)
	}
	slices.Sort(names)
	return names, nil
}

// indexLoad reports what loading the index files found.
type indexLoad struct {
	files   []string   // the index files read
	damaged []Problem  // index files that did not authenticate or decode: skipped
	missing map[ID]int // packs that index files name but that do not exist: their blob counts
}

// damage reports whether an error reading an object is damage to it
// (authentication, format) rather than a failure to read it.
func damage(err error) bool { return errors.Is(err, ErrAuth) || errors.Is(err, errFormat) }

// loadIndexFiles reads every index file into a fresh in-memory index,
// keeping only the entries of packs that exist: packs lists them (listed
// before the index files, so a pack missing from it was either created
// since, which a Stat tells, or does not exist). Packs found that way are
// added to packs. An index file deleted while it is read (replaced by gc's
// compaction) makes the listing start over; a damaged one is skipped and
// reported; any other error fails the load.
func (r *Repository) loadIndexFiles(ctx context.Context, packs map[ID]packMeta, condemned []ID) (*indexLoad, error) {
	idx := newIndex()
	idx.condemn(condemned)
	res := &indexLoad{missing: map[ID]int{}}
	var mu sync.Mutex
	var aside []indexPack // records of packs not in the listing
	read := map[string]bool{}
	for round := 0; ; round++ {
		names, err := r.listIndexFiles(ctx)
		if err != nil {
			return nil, err
		}
		var vanished []string
		g, gctx := safego.WithContext(ctx)
		g.SetLimit(8)
		for _, name := range names {
			if read[name] {
				continue
			}
			read[name] = true
			g.Go(func() error {
				recs, err := r.readIndexFile(gctx, name)
				switch {
				case errors.Is(err, backend.ErrNotFound):
					mu.Lock()
					vanished = append(vanished, name)
					mu.Unlock()
					return nil
				case damage(err):
					mu.Lock()
					res.damaged = append(res.damaged, Problem{Object: name, Err: strings.TrimPrefix(err.Error(), "index file "+name+": ")})
					mu.Unlock()
					return nil
				case err != nil:
					return err
				}
				// Records of packs not in the listing go aside, the
				// others into the index, without a lock per entry.
				known := recs[:0:0]
				var unknown []indexPack
				for _, p := range recs {
					if _, ok := packs[p.ID]; ok {
						known = append(known, p)
					} else {
						unknown = append(unknown, p)
					}
				}
				idx.bulkAdd(known, func(id ID) time.Time { return packs[id].mod })
				mu.Lock()
				res.files = append(res.files, name)
				aside = append(aside, unknown...)
				mu.Unlock()
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		if len(vanished) == 0 {
			break
		}
		if round == 4 {
			return nil, fmt.Errorf("index files keep vanishing while read (the last: %s): is a gc or repair running with a broken clock?", vanished[0])
		}
	}
	if err := r.placeAside(ctx, idx, packs, aside, res); err != nil {
		return nil, err
	}
	idx.finish()
	slices.Sort(res.files)
	slices.SortFunc(res.damaged, func(a, b Problem) int { return strings.Compare(a.Object, b.Object) })
	r.idx = idx
	return res, nil
}

// placeAside indexes the records of packs that were not in the listing if
// the packs exist now (written since the listing), and counts the others
// as missing.
func (r *Repository) placeAside(ctx context.Context, idx *index, packs map[ID]packMeta, aside []indexPack, res *indexLoad) error {
	if len(aside) == 0 {
		return nil
	}
	var now map[ID]packMeta
	if len(aside) > 64 {
		var err error
		if now, err = r.listPacks(ctx); err != nil {
			return err
		}
	}
	for _, p := range aside {
		m, ok := now[p.ID]
		if now == nil {
			oi, err := r.be.Stat(ctx, PackKey(p.ID))
			switch {
			case errors.Is(err, backend.ErrNotFound):
			case err != nil:
				return fmt.Errorf("reading pack %s: %w", p.ID.Short(), err)
			default:
				m, ok = packMeta{size: oi.Size, mod: oi.ModTime}, true
			}
		}
		if !ok {
			res.missing[p.ID] += len(p.Blobs)
			continue
		}
		packs[p.ID] = m
		idx.bulkAdd([]indexPack{p}, func(ID) time.Time { return m.mod })
	}
	return nil
}

// LoadIndex reads every index file into memory, replacing the index held.
// It keeps only entries of packs that exist, preferring, of several copies
// of a blob, one in a pack that no gc condemns. A damaged index file is
// skipped, with a warning (see Warnings), so that the snapshots whose data
// other index files describe stay readable.
func (r *Repository) LoadIndex(ctx context.Context) error {
	condemned, err := r.newestCondemned(ctx)
	if err != nil {
		return err
	}
	packs, err := r.listPacks(ctx)
	if err != nil {
		return err
	}
	res, err := r.loadIndexFiles(ctx, packs, condemned)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.warnings = nil
	for _, p := range res.damaged {
		r.warnings = append(r.warnings, fmt.Errorf("%w: %s was skipped (%s); snapshots whose chunks only it lists cannot be read", ErrIndexDamaged, p.Object, p.Err))
	}
	if n := len(res.missing); n > 0 {
		blobs := 0
		for _, b := range res.missing {
			blobs += b
		}
		r.warnings = append(r.warnings, fmt.Errorf("the index names %d packs (%d blobs) that do not exist; their blobs were left out: %w", n, blobs, ErrBlobMissing))
	}
	return nil
}

// Warnings returns what opening the repository found damaged but could
// work around (skipped index files, index entries of missing packs), one
// line each, for the caller to show. They wrap ErrIndexDamaged or
// ErrBlobMissing; RepairIndex (then RepairSnapshots) mends both.
func (r *Repository) Warnings() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.warnings)
}
