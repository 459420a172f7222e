package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo/backend"
)

// Repairs only add knowledge: they never drop an index entry they cannot
// replace with a better one, and they change snapshots only when asked,
// saying what is lost.

// RepairIndexOptions tune RepairIndex.
type RepairIndexOptions struct {
	// Workers bounds parallel header reads (default 4).
	Workers int
	// StaleLease: see LeaseOptions.Stale.
	StaleLease time.Duration
}

// SalvagedPack reports a pack whose header could not be read: its blobs
// were taken from the old index files and each verified by decrypting it.
type SalvagedPack struct {
	Pack ID     `json:"pack"`
	Err  string `json:"error"` // why the header is unreadable
	Kept int    `json:"kept"`  // blobs that verified, indexed again
	Lost int    `json:"lost"`  // blobs the old index named that did not verify
}

// RepairIndexResult reports a rebuild of the index.
type RepairIndexResult struct {
	Packs       int            `json:"packs"`
	Blobs       int            `json:"blobs"`
	IndexFiles  int            `json:"index_files"`  // written
	Replaced    int            `json:"replaced"`     // old index files deleted
	Salvaged    []SalvagedPack `json:"salvaged"`     // packs with unreadable headers, indexed from old entries
	Unreadable  []Problem      `json:"unreadable"`   // packs whose header is unreadable and that no old index file describes
	Damaged     []Problem      `json:"damaged"`      // old index files that did not authenticate or decode
	MissingRefs int            `json:"missing_refs"` // old entries naming packs that do not exist (dropped)
	HeaderBytes int64          `json:"header_bytes"` // read from the backend
}

// readHeaderOnly reads a pack's header with two ranged reads (trailer,
// then header), without the blobs.
func (r *Repository) readHeaderOnly(ctx context.Context, id ID, size int64) ([keySize]byte, []PackedBlob, int64, error) {
	var key [keySize]byte
	if size < packTrailer+Overhead {
		return key, nil, 0, fmt.Errorf("%w: pack of %d bytes is too short", errFormat, size)
	}
	tr, err := r.ReadPack(ctx, id, size-packTrailer, packTrailer)
	if err != nil {
		return key, nil, 0, err
	}
	hl := int64(binary.LittleEndian.Uint32(tr))
	hoff := size - packTrailer - hl
	if hl < Overhead || hl > maxPackHeader || hoff < 0 {
		return key, nil, packTrailer, fmt.Errorf("%w: pack header length %d in a pack of %d bytes", errFormat, hl, size)
	}
	sealed, err := r.ReadPack(ctx, id, hoff, hl)
	if err != nil {
		return key, nil, packTrailer, err
	}
	plain, err := open(r.aead, nil, sealed, []byte(aadPackHeader))
	if err != nil {
		return key, nil, packTrailer + hl, fmt.Errorf("pack header: %w", err)
	}
	key, blobs, err := decodePackHeader(plain, hoff)
	return key, blobs, packTrailer + hl, err
}

// RepairIndex rebuilds the index: every pack whose header reads is indexed
// from its header; a pack whose header is damaged keeps the entries that
// the old index files give it, each blob verified by decrypting it and
// checking its ID; entries of packs that do not exist are dropped. It
// writes the new index files, then deletes the old ones. It holds the
// maintenance lease, and is safe beside readers and writers (index files
// written meanwhile are kept). Killed at any point, it leaves every
// readable blob indexed (old and new files overlap until the old ones are
// deleted).
func (r *Repository) RepairIndex(ctx context.Context, opts RepairIndexOptions) (*RepairIndexResult, error) {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	lease, err := r.AcquireLease(ctx, LeaseOptions{Stale: opts.StaleLease, Purpose: "repair index"})
	if err != nil {
		return nil, fmt.Errorf("repair index: %w", err)
	}
	defer lease.Release(ctx)
	res, err := r.repairIndex(ctx, lease, opts)
	if err != nil {
		return nil, fmt.Errorf("repair index: %w", err)
	}
	return res, nil
}

// rebuild is the work of one RepairIndex.
type rebuild struct {
	r       *Repository
	res     *RepairIndexResult
	packs   map[ID]packMeta
	ids     []ID         // packs, sorted
	found   []*indexPack // by position in ids: what is known of each pack
	errs    []error      // by position in ids: why its header is unreadable
	damaged map[ID]int   // packs whose header is unreadable → position
}

func (r *Repository) repairIndex(ctx context.Context, lease *Lease, opts RepairIndexOptions) (*RepairIndexResult, error) {
	// Index files, then packs: every pack an old index file names exists
	// in the listing unless it is missing.
	old, err := r.listIndexFiles(ctx)
	if err != nil {
		return nil, err
	}
	packs, err := r.listPacks(ctx)
	if err != nil {
		return nil, err
	}
	rb := &rebuild{r: r, res: &RepairIndexResult{}, packs: packs, damaged: map[ID]int{}}
	if err := rb.readHeaders(ctx, opts.Workers); err != nil {
		return nil, err
	}
	if err := rb.readOldIndex(ctx, old); err != nil {
		return nil, err
	}
	if err := rb.salvage(ctx); err != nil {
		return nil, err
	}
	written, err := rb.write(ctx)
	if err != nil {
		return nil, err
	}
	for i, k := range old {
		if written[k] {
			continue
		}
		if i%deleteBatch == 0 {
			if err := lease.Check(ctx); err != nil {
				return nil, err
			}
		}
		if err := r.be.Delete(ctx, k); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return nil, fmt.Errorf("deleting old index file %s: %w", k, err)
		}
		rb.res.Replaced++
	}
	return rb.res, nil
}

// readHeaders reads every pack's header, in parallel.
func (rb *rebuild) readHeaders(ctx context.Context, workers int) error {
	for id := range rb.packs {
		rb.ids = append(rb.ids, id)
	}
	slices.SortFunc(rb.ids, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	rb.found = make([]*indexPack, len(rb.ids))
	rb.errs = make([]error, len(rb.ids))
	read := make([]int64, len(rb.ids))
	g, gctx := safego.WithContext(ctx)
	g.SetLimit(workers)
	for i, id := range rb.ids {
		g.Go(func() error {
			key, blobs, n, err := rb.r.readHeaderOnly(gctx, id, rb.packs[id].size)
			read[i] = n
			switch {
			case err == nil:
				rb.found[i] = &indexPack{ID: id, Key: key, Blobs: blobs}
			case damage(err) || errors.Is(err, backend.ErrInvalidRange):
				rb.errs[i] = err
			default:
				return err // a failure to read is no verdict on the pack
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, id := range rb.ids {
		rb.res.HeaderBytes += read[i]
		if rb.found[i] == nil {
			rb.damaged[id] = i
		}
	}
	return nil
}

// readOldIndex takes from the old index files what they say of the packs
// whose header is damaged, and notes the damage they hold themselves.
func (rb *rebuild) readOldIndex(ctx context.Context, old []string) error {
	for _, name := range old {
		recs, err := rb.r.readIndexFile(ctx, name)
		switch {
		case errors.Is(err, backend.ErrNotFound):
			continue
		case damage(err):
			rb.res.Damaged = append(rb.res.Damaged, Problem{Object: name, Err: err.Error()})
			continue
		case err != nil:
			return err
		}
		for _, p := range recs {
			if _, ok := rb.packs[p.ID]; !ok {
				rb.res.MissingRefs += len(p.Blobs)
				continue
			}
			if i, ok := rb.damaged[p.ID]; ok && rb.found[i] == nil {
				rb.found[i] = &indexPack{ID: p.ID, Key: p.Key, Blobs: p.Blobs}
			}
		}
	}
	return nil
}

// salvage keeps, of each damaged pack the old index describes, the blobs
// that verify.
func (rb *rebuild) salvage(ctx context.Context) error {
	for id, i := range rb.damaged {
		if rb.found[i] == nil {
			rb.res.Unreadable = append(rb.res.Unreadable, Problem{Object: PackKey(id), Err: rb.errs[i].Error()})
			continue
		}
		sp, err := rb.r.salvage(ctx, rb.found[i], rb.packs[id].size)
		if err != nil {
			return err
		}
		sp.Err = rb.errs[i].Error()
		rb.res.Salvaged = append(rb.res.Salvaged, sp)
	}
	slices.SortFunc(rb.res.Salvaged, func(a, b SalvagedPack) int { return bytes.Compare(a.Pack[:], b.Pack[:]) })
	slices.SortFunc(rb.res.Unreadable, func(a, b Problem) int { return strings.Compare(a.Object, b.Object) })
	return nil
}

// write writes the new index files, loads them as the repository's index,
// and returns their names.
func (rb *rebuild) write(ctx context.Context) (map[string]bool, error) {
	w := &indexWriter{r: rb.r}
	idx := newIndex()
	for _, p := range rb.found {
		if p == nil || len(p.Blobs) == 0 {
			continue
		}
		rb.res.Packs++
		rb.res.Blobs += len(p.Blobs)
		idx.add(p.ID, p.Key, rb.packs[p.ID].mod, p.Blobs)
		if err := w.add(ctx, *p); err != nil {
			return nil, err
		}
	}
	if err := w.flush(ctx); err != nil {
		return nil, err
	}
	idx.finish()
	rb.r.idx = idx
	rb.res.IndexFiles = len(w.written)
	written := map[string]bool{}
	for _, k := range w.written {
		written[k] = true
	}
	return written, nil
}

// salvage verifies, blob by blob, what an old index says a pack with a
// damaged header holds, and keeps p.Blobs to those that verify.
func (r *Repository) salvage(ctx context.Context, p *indexPack, size int64) (SalvagedPack, error) {
	sp := SalvagedPack{Pack: p.ID}
	o := r.NewBlobOpener()
	var kept []PackedBlob
	var buf, plain []byte
	for _, b := range p.Blobs {
		if int64(b.Offset)+int64(b.Length) > size {
			sp.Lost++
			continue
		}
		var err error
		buf, err = r.ReadPackInto(ctx, p.ID, int64(b.Offset), int64(b.Length), buf)
		if err != nil {
			if errors.Is(err, backend.ErrInvalidRange) {
				sp.Lost++
				continue
			}
			return sp, err
		}
		ref := BlobRef{Type: b.Type, ID: b.ID, Pack: p.ID, PackKey: p.Key, Offset: b.Offset, Length: b.Length, RawLength: b.RawLength, Compressed: b.Compressed}
		if plain, err = o.Open(ref, buf, plain[:0]); err != nil {
			sp.Lost++
			continue
		}
		kept = append(kept, b)
	}
	p.Blobs = kept
	sp.Kept = len(kept)
	return sp, nil
}
