package mover

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo"
)

// Page fetches (issue 18). A snapshot lists its chunks in pages, one per
// segment; from S3 each request costs a few milliseconds (20 ms on a real
// one), so pages fetched one at a time, one request each, would cost a
// 10 TiB volume an hour before a byte is written. The pager fetches them
// ahead of the planner and hands them over in order:
//   - a batch of pageBatch pages at a time: the distinct pages not in the
//     cache are looked up in the index and read like chunks, a run of one
//     pack's page blobs per ranged read (pages of one snapshot lie
//     together in its page packs, so a batch is a request or two);
//   - at most pageFetches reads at once, at most two batches ahead of the
//     planner: bounded in memory and connections whatever the volume's
//     size;
//   - each distinct page ID is fetched once while it is in the cache
//     (maxCachedPages): identical pages, every all-hole page of a sparse
//     volume first, cost nothing after the first;
//   - a failed fetch is reported when the planner reaches its page, so
//     errors come in the order of the volume.

const (
	// pageBatch is how many pages the pager plans its reads for at once,
	// and so how far (up to twice) it runs ahead of the planner. A page
	// lists at most a segment's chunks (64 at the defaults, 48 bytes
	// each): a batch holds about 12 MiB at most, a few KiB for holes.
	pageBatch = 256
	// maxCachedPages bounds the page cache of distinct pages.
	maxCachedPages = 2 * pageBatch
	// minPageFetches is the least number of page reads at once; more
	// when the import has more download workers.
	minPageFetches = 16
)

// pageLoad is one page's entries on their way to the planner; done is
// closed when entries or err are set. The entries are shared: readers
// only read them.
type pageLoad struct {
	done    chan struct{}
	entries []repo.Entry
	err     error
}

// wait returns the page's entries once they are loaded. pagerDone is
// closed when the pager has returned, after every read it started: a
// load not done by then never will be (a read panicked), and wait returns
// errPagesEnded.
func (l *pageLoad) wait(ctx context.Context, pagerDone <-chan struct{}) ([]repo.Entry, error) {
	select {
	case <-l.done:
		return l.entries, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-pagerDone:
		select {
		case <-l.done:
			return l.entries, l.err
		default:
			return nil, errPagesEnded
		}
	}
}

// set sets the page's entries or error and wakes its readers.
func (l *pageLoad) set(e []repo.Entry, err error) {
	l.entries, l.err = e, err
	close(l.done)
}

// pageItem is page i of the snapshot as the planner needs it: skip when
// the AssumeBase page is the same page, else the page and, where the base
// has a page over the same range, the base's.
type pageItem struct {
	i          int
	skip       bool
	page, base *pageLoad
}

// pageNeed is a page to fetch: page i of s.
type pageNeed struct {
	s   *repo.Snapshot
	i   int
	l   *pageLoad
	ref repo.BlobRef
}

// pager fetches pages ahead of the planner.
type pager struct {
	im    *importer
	g     *safego.Group // the reads, at most pageFetches at once
	cache map[repo.ID]*pageLoad
}

// pageAheadRun sends an item for every page of the snapshot, in order, to
// items, which it closes at the end; it returns once every read it
// started has ended.
func (im *importer) pageAheadRun(ctx context.Context, items chan<- pageItem) error {
	defer close(items)
	g, gctx := safego.WithContext(ctx)
	g.SetLimit(max(minPageFetches, im.opts.Downloads))
	p := &pager{im: im, g: g}
	err := p.run(gctx, items)
	if werr := g.Wait(); err == nil {
		err = werr
	}
	return err
}

func (p *pager) run(ctx context.Context, items chan<- pageItem) error {
	im := p.im
	n := len(im.snap.Pages)
	for first := 0; first < n; first += pageBatch {
		batch := make([]pageItem, 0, min(pageBatch, n-first))
		var need []pageNeed
		for i := first; i < min(first+pageBatch, n); i++ {
			it := pageItem{i: i}
			base := im.basePage(i)
			if base != nil && *base == im.snap.Pages[i] {
				it.skip = true
			} else {
				it.page = p.load(im.snap, i, &need)
				if base != nil {
					it.base = p.load(im.opts.AssumeBase, i, &need)
				}
			}
			batch = append(batch, it)
		}
		p.fetch(ctx, need)
		for _, it := range batch {
			if err := sendCtx(ctx, items, it); err != nil {
				return err
			}
		}
	}
	return nil
}

// load returns page i of s from the cache, or a new load that it adds to
// need.
func (p *pager) load(s *repo.Snapshot, i int, need *[]pageNeed) *pageLoad {
	id := s.Pages[i]
	if l := p.cache[id]; l != nil {
		return l
	}
	if p.cache == nil || len(p.cache) >= maxCachedPages {
		p.cache = map[repo.ID]*pageLoad{} // loads in flight finish all the same
	}
	l := &pageLoad{done: make(chan struct{})}
	p.cache[id] = l
	*need = append(*need, pageNeed{s: s, i: i, l: l})
	return l
}

// fetch starts the reads of need: runs of one pack's page blobs, each run
// one ranged read; a page the index lacks is left to LoadPage, whose error
// says where it is missing from.
func (p *pager) fetch(ctx context.Context, need []pageNeed) {
	byPack := map[repo.ID][]pageNeed{}
	for _, nd := range need {
		ref, ok := p.im.st.Lookup(nd.s.Pages[nd.i])
		if !ok {
			p.g.Go(func() error {
				var o repo.BlobOpener
				nd.l.set(p.im.st.LoadPage(ctx, &o, nd.s, nd.i))
				return nil
			})
			continue
		}
		nd.ref = ref
		byPack[ref.Pack] = append(byPack[ref.Pack], nd)
	}
	for _, nds := range byPack {
		slices.SortFunc(nds, func(a, b pageNeed) int { return cmp.Compare(a.ref.Offset, b.ref.Offset) })
		for len(nds) > 0 {
			start, end := int64(nds[0].ref.Offset), int64(nds[0].ref.Offset)+int64(nds[0].ref.Length)
			k := 1
			for ; k < len(nds); k++ {
				off, n := int64(nds[k].ref.Offset), int64(nds[k].ref.Length)
				if off < end || off-end > p.im.opts.MaxGap || off+n-start > p.im.opts.MaxRange {
					break
				}
				end = off + n
			}
			run := nds[:k]
			p.g.Go(func() error { p.read(ctx, run); return nil })
			nds = nds[k:]
		}
	}
}

// read loads a run of one pack's page blobs with one ranged read and sets
// each page; on an error, the pages not yet set get it.
func (p *pager) read(ctx context.Context, run []pageNeed) {
	refs := make([]repo.BlobRef, len(run))
	for i, nd := range run {
		refs[i] = nd.ref
	}
	var o repo.BlobOpener
	var buf []byte
	next := 0
	_, err := p.im.st.LoadBlobsInto(ctx, &o, refs, func(_, n int) ([]byte, error) {
		if cap(buf) < n {
			buf = make([]byte, 0, n)
		}
		return buf[:0], nil
	}, func(i int, plain []byte) error {
		nd := run[i]
		start, end := nd.s.PageRange(nd.i)
		e, err := repo.DecodePage(plain, end-start)
		if err != nil {
			err = fmt.Errorf("snapshot %s page %d: %w", nd.s.ID.Short(), nd.i, err)
		}
		nd.l.set(e, err)
		next = i + 1
		return nil
	})
	if err == nil && next < len(run) {
		err = errors.New("import: internal: a page read ended early")
	}
	for _, nd := range run[next:] {
		nd.l.set(nil, fmt.Errorf("snapshot %s page %d: %w", nd.s.ID.Short(), nd.i, err))
	}
}
