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

	"github.com/blockmover/blockmover/repo/backend"
	"golang.org/x/sync/errgroup"
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
	ids := make([]ID, 0, len(packs))
	for id := range packs {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	res := &RepairIndexResult{}
	results := make([]*indexPack, len(ids))
	headerErr := make([]error, len(ids))
	read := make([]int64, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Workers)
	for i, id := range ids {
		g.Go(func() error {
			key, blobs, n, err := r.readHeaderOnly(gctx, id, packs[id].size)
			read[i] = n
			switch {
			case err == nil:
				results[i] = &indexPack{ID: id, Key: key, Blobs: blobs}
			case damage(err) || errors.Is(err, backend.ErrInvalidRange):
				headerErr[i] = err
			default:
				return err // a failure to read is no verdict on the pack
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("repair index: %w", err)
	}
	unreadable := map[ID]int{} // pack → its position in ids
	for i, id := range ids {
		res.HeaderBytes += read[i]
		if results[i] == nil {
			unreadable[id] = i
		}
	}
	// The old index files: what they say of packs whose header is damaged,
	// and what damage they hold themselves.
	for _, name := range old {
		recs, err := r.readIndexFile(ctx, name)
		switch {
		case errors.Is(err, backend.ErrNotFound):
			continue
		case damage(err):
			res.Damaged = append(res.Damaged, Problem{Object: name, Err: err.Error()})
			continue
		case err != nil:
			return nil, fmt.Errorf("repair index: %w", err)
		}
		for _, p := range recs {
			if _, ok := packs[p.ID]; !ok {
				res.MissingRefs += len(p.Blobs)
				continue
			}
			if i, ok := unreadable[p.ID]; ok && results[i] == nil {
				results[i] = &indexPack{ID: p.ID, Key: p.Key, Blobs: p.Blobs}
			}
		}
	}
	for id, i := range unreadable {
		if results[i] == nil {
			res.Unreadable = append(res.Unreadable, Problem{Object: PackKey(id), Err: headerErr[i].Error()})
			continue
		}
		sp, err := r.salvage(ctx, results[i], packs[id].size)
		if err != nil {
			return nil, fmt.Errorf("repair index: %w", err)
		}
		sp.Err = headerErr[i].Error()
		res.Salvaged = append(res.Salvaged, sp)
	}
	slices.SortFunc(res.Salvaged, func(a, b SalvagedPack) int { return bytes.Compare(a.Pack[:], b.Pack[:]) })
	slices.SortFunc(res.Unreadable, func(a, b Problem) int { return strings.Compare(a.Object, b.Object) })
	w := &indexWriter{r: r}
	idx := newIndex()
	for _, p := range results {
		if p == nil || len(p.Blobs) == 0 {
			continue
		}
		res.Packs++
		res.Blobs += len(p.Blobs)
		idx.add(p.ID, p.Key, packs[p.ID].mod, p.Blobs)
		if err := w.add(ctx, *p); err != nil {
			return nil, fmt.Errorf("repair index: %w", err)
		}
	}
	if err := w.flush(ctx); err != nil {
		return nil, fmt.Errorf("repair index: %w", err)
	}
	res.IndexFiles = len(w.written)
	written := map[string]bool{}
	for _, k := range w.written {
		written[k] = true
	}
	for i, k := range old {
		if written[k] {
			continue
		}
		if i%deleteBatch == 0 {
			if err := lease.Check(ctx); err != nil {
				return nil, fmt.Errorf("repair index: %w", err)
			}
		}
		if err := r.be.Delete(ctx, k); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return nil, fmt.Errorf("repair index: deleting old index file %s: %w", k, err)
		}
		res.Replaced++
	}
	idx.finish()
	r.idx = idx
	return res, nil
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
