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

// listPacks lists every pack object. A large repository's packs are
// listed by their 256 prefix directories in parallel (an S3 listing is a
// request per thousand keys, one after another; a directory's a stat per
// file): the first prefix tells whether it is worth it.
func (r *Repository) listPacks(ctx context.Context) (map[ID]packMeta, error) {
	var mu sync.Mutex
	packs := map[ID]packMeta{}
	list := func(ctx context.Context, prefix string) error {
		var found []backend.ObjectInfo
		err := r.be.List(ctx, prefix, func(oi backend.ObjectInfo) error {
			found = append(found, oi)
			return nil
		})
		if err != nil {
			return fmt.Errorf("listing packs: %w", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, oi := range found {
			id, err := ParseID(oi.Key[strings.LastIndexByte(oi.Key, '/')+1:])
			if err == nil && PackKey(id) == oi.Key {
				packs[id] = packMeta{size: oi.Size, mod: oi.ModTime}
			}
		}
		return nil
	}
	if err := list(ctx, dataPrefix+"00/"); err != nil {
		return nil, err
	}
	if len(packs) < parallelListMin/256 {
		return packs, list(ctx, dataPrefix)
	}
	g, gctx := safego.WithContext(ctx)
	g.SetLimit(16)
	for k := 1; k < 256; k++ {
		g.Go(func() error { return list(gctx, fmt.Sprintf("%s%02x/", dataPrefix, k)) })
	}
	return packs, g.Wait()
}

// parallelListMin is how many packs a repository must hold for listPacks
// to list them by prefix in parallel.
const parallelListMin = 16 << 10

func (r *Repository) listIndexFiles(ctx context.Context) ([]string, error) {
	infos, err := r.listIndexInfos(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(infos))
	for i, oi := range infos {
		names[i] = oi.Key
	}
	return names, nil
}

// listIndexInfos lists the index files, in name order.
func (r *Repository) listIndexInfos(ctx context.Context) ([]backend.ObjectInfo, error) {
	var infos []backend.ObjectInfo
	if err := r.be.List(ctx, indexPrefix, func(oi backend.ObjectInfo) error {
		infos = append(infos, oi)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing index: %w", err)
	}
	slices.SortFunc(infos, func(a, b backend.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	return infos, nil
}

// indexLoad reports what loading the index files found.
type indexLoad struct {
	files   []string   // the index files read (or taken from the cache)
	damaged []Problem  // index files that did not authenticate or decode: skipped
	missing map[ID]int // packs that index files name but that do not exist: their blob counts
	// For the cache: the packs each file names, for the files whose
	// packs all exist; and what changed against the cache.
	named      map[string][]ID
	incomplete map[string]bool // files naming a pack that does not exist
	fromDisk   int             // index files the cache held
	read       int             // index files read from the repository
	newBlobs   int             // blobs in them
}

// damage reports whether an error reading an object is damage to it
// (authentication, format) rather than a failure to read it.
func damage(err error) bool { return errors.Is(err, ErrAuth) || errors.Is(err, errFormat) }

// minIndexEntry is the fewest bytes an index file spends on one blob, so
// that its size bounds the blobs it can hold.
const minIndexEntry = 1 + 32 + 1 + 1 + 1 + 1

// loadIndexFiles reads every index file into a fresh in-memory index,
// keeping only the entries of packs that exist: packs lists them (listed
// before the index files, so a pack missing from it was either created
// since, which a Stat tells, or does not exist). Packs found that way are
// added to packs. An index file deleted while it is read (replaced by gc's
// compaction) makes the listing start over; a damaged one is skipped and
// reported; any other error fails the load.
//
// With a cache (see indexcache.go), the index starts as the cache's and
// only the listed files the cache lacks are read; their packs that the
// cache holds are taken as they are (LoadIndex then leaves out the
// cache's packs that no listed file names). estimate, if not
// nil, is called once before any index file is read with an upper bound of
// the blobs the index will hold.
func (r *Repository) loadIndexFiles(ctx context.Context, packs map[ID]packMeta, condemned []ID, cache *indexCache, estimate func(Config, int)) (*indexLoad, error) {
	var idx *index
	if cache != nil {
		idx = cache.index(condemned)
	} else {
		idx = newIndex()
		idx.condemn(condemned)
	}
	res := &indexLoad{missing: map[ID]int{}, named: map[string][]ID{}, incomplete: map[string]bool{}}
	ld := &loading{idx: idx, cache: cache, packs: packs, res: res}
	var mu sync.Mutex
	read := map[string]bool{}
	for round := 0; ; round++ {
		infos, err := r.listIndexInfos(ctx)
		if err != nil {
			return nil, err
		}
		if round == 0 && estimate != nil {
			n := 0
			for _, oi := range infos {
				if _, ok := cache.has(oi.Key); !ok {
					n += int(oi.Size / minIndexEntry)
				}
			}
			estimate(r.cfg, idx.Len()+n)
		}
		var vanished []string
		g, gctx := safego.WithContext(ctx)
		g.SetLimit(8)
		for _, oi := range infos {
			name := oi.Key
			if read[name] {
				continue
			}
			read[name] = true
			if _, ok := cache.has(name); ok {
				ld.mu.Lock() // readers of other files append too
				res.files = append(res.files, name)
				res.fromDisk++
				ld.mu.Unlock()
				continue
			}
			g.Go(func() error {
				gone, err := r.loadIndexFile(gctx, ld, name)
				if gone {
					mu.Lock()
					vanished = append(vanished, name)
					mu.Unlock()
				}
				return err
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
	if err := r.placeAside(ctx, idx, packs, ld.aside, res, cache != nil); err != nil {
		return nil, err
	}
	if cache == nil {
		idx.finish()
	}
	slices.Sort(res.files)
	slices.SortFunc(res.damaged, func(a, b Problem) int { return strings.Compare(a.Object, b.Object) })
	r.idx = idx
	return res, nil
}

// loading is the state of one loadIndexFiles shared by its readers.
type loading struct {
	idx   *index
	cache *indexCache
	packs map[ID]packMeta // read only while files are read
	mu    sync.Mutex      // guards res and aside
	res   *indexLoad
	aside []asidePack // records of packs not in the listing
}

// loadIndexFile reads index file name into ld.idx. It reports gone if the
// file no longer exists, records damage in ld.res, and returns any other
// error.
func (r *Repository) loadIndexFile(ctx context.Context, ld *loading, name string) (gone bool, err error) {
	recs, err := r.readIndexFile(ctx, name)
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return true, nil
	case damage(err):
		ld.mu.Lock()
		ld.res.damaged = append(ld.res.damaged, Problem{Object: name, Err: strings.TrimPrefix(err.Error(), "index file "+name+": ")})
		ld.mu.Unlock()
		return false, nil
	case err != nil:
		return false, err
	}
	idx, cache := ld.idx, ld.cache
	// Records of packs not in the listing go aside, the others into the
	// index, without a lock per entry.
	known := recs[:0:0]
	var unknown []asidePack
	ids := make([]ID, len(recs))
	blobs := 0
	for i, p := range recs {
		ids[i] = p.ID
		if cache != nil && idx.knows(p.ID) {
			// The cache's pack, named again by a file that gc's
			// compaction or a repair wrote: the same blobs, unless a
			// repair kept only those that verify, and then the cache
			// must not be used.
			if n, ok := idx.baseBlobs(p.ID); ok && n != len(p.Blobs) {
				return false, fmt.Errorf("%w: %s names %d blobs of pack %s, the cache %d", errCacheMismatch, name, len(p.Blobs), p.ID.Short(), n)
			}
			continue
		}
		blobs += len(p.Blobs)
		if _, ok := ld.packs[p.ID]; ok {
			known = append(known, p)
		} else {
			unknown = append(unknown, asidePack{name, p})
		}
	}
	mod := func(id ID) time.Time { return ld.packs[id].mod }
	if cache != nil {
		idx.addPacks(known, mod)
		cache.m.releaseAll()
	} else {
		idx.bulkAdd(known, mod)
	}
	ld.mu.Lock()
	defer ld.mu.Unlock()
	ld.res.files = append(ld.res.files, name)
	ld.res.named[name] = ids
	ld.res.read++
	ld.res.newBlobs += blobs
	ld.aside = append(ld.aside, unknown...)
	return false, nil
}

// errCacheMismatch: an index file describes one of the cache's packs
// differently from the cache.
var errCacheMismatch = errors.New("an index file and the cache disagree")

// asidePack is a pack record of an index file whose pack was not in the
// listing.
type asidePack struct {
	file string
	p    indexPack
}

// leaveOut marks gone the cache's packs that no listed index file names
// (their files were replaced or deleted since the cache was written) and,
// if listed (packs is a listing of every pack), those that do not exist,
// counted as missing.
func leaveOut(x *index, c *indexCache, res *indexLoad, packs map[ID]packMeta, listed bool) {
	named := make([]bool, x.nBase)
	for _, name := range res.files {
		if nums, ok := c.has(name); ok {
			for _, p := range nums {
				named[p] = true
			}
			continue
		}
		for _, id := range res.named[name] {
			if p, ok := x.packPos(id); ok && int(p) < x.nBase {
				named[p] = true
			}
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := range x.nBase {
		p := &x.packs[i]
		_, exists := packs[p.id]
		switch {
		case !named[i]:
		case listed && !exists:
			res.missing[p.id] += int(p.blobs)
		default:
			continue
		}
		p.gone = true
		x.shadowed += int(p.blobs)
	}
}

// placeAside indexes the records of packs that were not in the listing if
// the packs exist now (written since the listing), and counts the others
// as missing; the index file of a missing pack is left out of the cache.
func (r *Repository) placeAside(ctx context.Context, idx *index, packs map[ID]packMeta, aside []asidePack, res *indexLoad, cached bool) error {
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
	for _, a := range aside {
		p := a.p
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
			res.incomplete[a.file] = true
			continue
		}
		packs[p.ID] = m
		mod := func(ID) time.Time { return m.mod }
		if cached {
			idx.addPacks([]indexPack{p}, mod)
			idx.mapped.releaseAll() // see cacheMap.releaseAll
		} else {
			idx.bulkAdd([]indexPack{p}, mod)
		}
	}
	return nil
}

// LoadIndex reads every index file into memory, replacing the index held.
// It keeps only entries of packs that exist, preferring, of several copies
// of a blob, one in a pack that no gc condemns. A damaged index file is
// skipped, with a warning (see Warnings), so that the snapshots whose data
// other index files describe stay readable.
//
// With Options.IndexCache set, it starts from the repository's cache file
// there, reads only the index files the cache lacks, and writes the cache
// again when enough has changed (see indexcache.go). A cache that cannot be
// used is rebuilt; one that cannot be written is left alone: the cache
// never makes LoadIndex fail.
func (r *Repository) LoadIndex(ctx context.Context) error {
	gcState, condemned, err := r.newestGCState(ctx)
	if err != nil {
		return err
	}
	var cache *indexCache
	if r.opts.IndexCache != "" {
		if cache, err = r.readIndexCache(r.opts.IndexCache); err != nil {
			r.cacheNote(fmt.Errorf("index cache %s not used: %w", r.cachePath(r.opts.IndexCache), err))
			cache = nil
		}
	}
	// Without a cache, or with one whose packs were listed too long ago,
	// every pack is listed (before the index files, see loadIndexFiles);
	// with a cache, only the packs of the index files it lacks are looked
	// up (see indexcache.go).
	now := time.Now().Unix()
	packs, listed, all := map[ID]packMeta{}, int64(0), false
	if cache != nil {
		listed = cache.listed
	}
	if cache == nil || now-cache.listed >= int64(r.cacheRelist()/time.Second) {
		if packs, err = r.listPacks(ctx); err != nil {
			return err
		}
		listed, all = now, true
	}
	res, err := r.loadIndexFiles(ctx, packs, condemned, cache, r.opts.IndexEstimate)
	if errors.Is(err, errCacheMismatch) {
		r.cacheNote(fmt.Errorf("index cache %s not used: %w", r.cachePath(r.opts.IndexCache), err))
		cache = nil
		if !all {
			if packs, err = r.listPacks(ctx); err != nil {
				return err
			}
			listed, all = now, true
		}
		res, err = r.loadIndexFiles(ctx, packs, condemned, nil, nil)
	}
	if err != nil {
		return err
	}
	if cache != nil {
		leaveOut(r.idx, cache, res, packs, all)
		cache.m.releaseAll()
	}
	if r.opts.IndexCache != "" && cacheStale(r.idx, cache, res) {
		files := r.cacheFiles(cache, res)
		if err := r.writeIndexCache(r.opts.IndexCache, r.idx, files, listed); err != nil {
			r.cacheNote(fmt.Errorf("index cache %s not written: %w", r.cachePath(r.opts.IndexCache), err))
		}
	}
	r.startRefresh(res.files, res.damaged, gcState)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loaded = IndexStats{Files: len(res.files), Cached: res.fromDisk, Read: res.read, Blobs: r.idx.Len()}
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

// cacheRelist is how long the packs of a cache file are trusted to exist
// without listing the repository's packs again (see indexcache.go).
const cacheRelist = time.Hour

func (r *Repository) cacheRelist() time.Duration {
	if r.opts.cacheRelist != 0 {
		return r.opts.cacheRelist
	}
	return cacheRelist
}

// Rewrite policy of the cache: the next open reads every index file the
// cache lacks, so the cache is written again when that would be more than
// a few files, or the changes are a sixteenth of it.
const (
	cacheMaxNewFiles = 8
	cacheMaxChange   = 16
)

// cacheStale reports whether the cache should be written again after a
// load: there was none (or it was unusable), or enough changed.
func cacheStale(x *index, c *indexCache, res *indexLoad) bool {
	if c == nil {
		return true
	}
	gone := len(c.files) - res.fromDisk
	n := x.Len()
	return res.read+gone >= cacheMaxNewFiles || res.newBlobs*cacheMaxChange > n || x.shadowed-c.shadowed > n/cacheMaxChange
}

// cacheFiles returns the packs (by number) that each index file the cache
// will hold names: the files read or taken from the cache whose packs all
// exist.
func (r *Repository) cacheFiles(c *indexCache, res *indexLoad) map[string][]uint32 {
	files := map[string][]uint32{}
	x := r.idx
	x.mu.RLock()
	defer x.mu.RUnlock()
outer:
	for _, name := range res.files {
		if res.incomplete[name] {
			continue
		}
		if nums, ok := c.has(name); ok {
			for _, p := range nums {
				if x.packs[p].gone {
					continue outer
				}
			}
			files[name] = nums
			continue
		}
		ids, ok := res.named[name]
		if !ok {
			continue
		}
		nums := make([]uint32, 0, len(ids))
		for _, id := range ids {
			p, ok := x.packPos(id)
			if !ok || x.packs[p].gone {
				continue outer
			}
			nums = append(nums, p)
		}
		files[name] = nums
	}
	return files
}

// IndexStats says where the last LoadIndex found the index.
type IndexStats struct {
	Files  int `json:"files"`  // index files listed and used
	Cached int `json:"cached"` // of those, taken from the local cache
	Read   int `json:"read"`   // read from the repository
	Blobs  int `json:"blobs"`  // blobs indexed
}

// IndexStats says where the last LoadIndex found the index.
func (r *Repository) IndexStats() IndexStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loaded
}

// cacheNote records why the index cache was not used or written: never an
// error of the command (see CacheNotes).
func (r *Repository) cacheNote(err error) {
	r.mu.Lock()
	r.cacheNotes = append(r.cacheNotes, err)
	r.mu.Unlock()
}

// CacheNotes returns why the local index cache was not used or not
// written at the last opens, if it was not: for a debug log. The
// repository works the same without its cache.
func (r *Repository) CacheNotes() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.cacheNotes)
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
