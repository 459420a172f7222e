package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/blockmover/blockmover/repo/backend"
	"golang.org/x/sync/errgroup"
)

// RepairIndexResult reports a rebuild of the index.
type RepairIndexResult struct {
	Packs       int       `json:"packs"`
	Blobs       int       `json:"blobs"`
	IndexFiles  int       `json:"index_files"`  // written
	Replaced    int       `json:"replaced"`     // old index files deleted
	Unreadable  []Problem `json:"unreadable"`   // packs whose header could not be read
	HeaderBytes int64     `json:"header_bytes"` // read from the backend
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

// RepairIndex rebuilds the index from the pack headers alone: it writes new
// index files for every readable pack, then deletes the index files that
// existed before. Packs whose header cannot be read are reported, not
// deleted. Run it when index files are lost or damaged; it is safe beside
// readers, and beside writers (their index files written meanwhile are
// kept).
func (r *Repository) RepairIndex(ctx context.Context, workers int) (*RepairIndexResult, error) {
	if workers <= 0 {
		workers = 4
	}
	var old []string
	if err := r.be.List(ctx, indexPrefix, func(oi backend.ObjectInfo) error {
		old = append(old, oi.Key)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing index: %w", err)
	}
	type packInfo struct {
		id   ID
		size int64
	}
	var packs []packInfo
	if err := r.be.List(ctx, dataPrefix, func(oi backend.ObjectInfo) error {
		id, err := ParseID(oi.Key[strings.LastIndexByte(oi.Key, '/')+1:])
		if err == nil && PackKey(id) == oi.Key {
			packs = append(packs, packInfo{id, oi.Size})
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing packs: %w", err)
	}
	res := &RepairIndexResult{}
	results := make([]*indexPack, len(packs))
	errs := make([]error, len(packs))
	read := make([]int64, len(packs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for i, p := range packs {
		g.Go(func() error {
			key, blobs, n, err := r.readHeaderOnly(gctx, p.id, p.size)
			read[i] = n
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				errs[i] = err
				return nil
			}
			results[i] = &indexPack{ID: p.id, Key: key, Blobs: blobs}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	w := &indexWriter{r: r}
	for i, p := range results {
		res.HeaderBytes += read[i]
		if p == nil {
			res.Unreadable = append(res.Unreadable, Problem{Object: PackKey(packs[i].id), Err: errs[i].Error()})
			continue
		}
		res.Packs++
		res.Blobs += len(p.Blobs)
		if err := w.add(ctx, *p); err != nil {
			return nil, err
		}
	}
	if err := w.flush(ctx); err != nil {
		return nil, err
	}
	res.IndexFiles = len(w.written)
	written := map[string]bool{}
	for _, k := range w.written {
		written[k] = true
	}
	for _, k := range old {
		if written[k] {
			continue
		}
		if err := r.be.Delete(ctx, k); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return nil, fmt.Errorf("deleting old index file %s: %w", k, err)
		}
		res.Replaced++
	}
	r.idx = newIndex()
	for _, p := range results {
		if p != nil {
			r.idx.add(p.ID, p.Key, p.Blobs)
		}
	}
	return res, nil
}

// SnapshotDamage lists what one snapshot needs and the repository lacks.
type SnapshotDamage struct {
	Snapshot      ID     `json:"snapshot"`
	Volume        string `json:"volume"`
	MissingPages  []int  `json:"missing_pages,omitempty"`
	MissingChunks []ID   `json:"missing_chunks,omitempty"`
	MissingBytes  int64  `json:"missing_bytes"`
	Err           string `json:"error,omitempty"` // the snapshot itself is unreadable
}

// DamagedSnapshots reports every snapshot that references pages or chunks
// that are not in the index, and which ones. It changes nothing.
func (r *Repository) DamagedSnapshots(ctx context.Context) ([]SnapshotDamage, error) {
	ids, err := r.SnapshotIDs(ctx)
	if err != nil {
		return nil, err
	}
	o := r.NewBlobOpener()
	var out []SnapshotDamage
	for _, id := range ids {
		d := SnapshotDamage{Snapshot: id}
		s, err := r.LoadSnapshot(ctx, id)
		if err != nil {
			d.Err = err.Error()
			out = append(out, d)
			continue
		}
		d.Volume = s.Volume
		for i := range s.Pages {
			entries, err := r.LoadPage(ctx, o, s, i)
			if err != nil {
				d.MissingPages = append(d.MissingPages, i)
				start, end := s.PageRange(i)
				d.MissingBytes += end - start
				continue
			}
			for _, e := range entries {
				if !e.Hole && !r.idx.Has(e.ID) {
					if _, ok := r.Lookup(e.ID); ok {
						continue // in a condemned pack: still readable
					}
					d.MissingChunks = append(d.MissingChunks, e.ID)
					d.MissingBytes += e.Length
				}
			}
		}
		if len(d.MissingPages) > 0 || len(d.MissingChunks) > 0 {
			out = append(out, d)
		}
	}
	return out, nil
}
