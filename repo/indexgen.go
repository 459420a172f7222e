package repo

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo/backend"
)

// GenerateIndexOptions shape the synthetic index that GenerateIndex
// writes. Zero fields take the defaults, which reproduce what exports of
// unique data leave behind with the default chunking and pack size.
type GenerateIndexOptions struct {
	// Blobs is the number of data blobs to index.
	Blobs int
	// BlobsPerPack: default 16 (1 MiB chunks in 16 MiB packs).
	BlobsPerPack int
	// PacksPerFile: default IndexCheckpoint (32), the index files an
	// export writes; gc's compaction writes larger ones (about 200,000
	// blobs each).
	PacksPerFile int
	// BlobSize is the stored length recorded for every blob (default
	// 1 MiB). Only the index records it: the packs do not hold the blobs.
	BlobSize int
	// Seed makes the blob IDs and pack IDs reproducible (0: random).
	Seed uint64
	// Workers bounds concurrent writes (default 16).
	Workers int
	// PutPack, if set, writes each placeholder pack instead of the
	// repository's backend (e.g. straight into a directory without the
	// fsyncs of the fs backend, for speed); it must make the object
	// appear in the backend's listing under key.
	PutPack func(ctx context.Context, key string, data []byte) error
}

// GenerateIndex writes a synthetic index of o.Blobs data blobs into r, for
// measurements of what the index costs at scale (opening, exporting into,
// listing a large repository): index files in the real format, sealed
// under r's key as an export writes them, naming packs that exist.
//
// The packs are placeholders: each is a valid pack whose header lists no
// blob, so the index names blobs (random IDs, which no real chunk will
// ever match) that the packs do not hold. Exports, opens and listings work
// on such a repository as on a real one of that size; reading one of the
// synthetic blobs fails, so `check --read-data`, repair and gc's repack
// report damage there. Use it on throwaway repositories only.
func GenerateIndex(ctx context.Context, r *Repository, o GenerateIndexOptions) error {
	if o.Blobs < 0 || o.BlobsPerPack < 0 || o.PacksPerFile < 0 || o.BlobSize < 0 {
		return errors.New("generate index: negative size")
	}
	if o.BlobsPerPack == 0 {
		o.BlobsPerPack = 16
	}
	if o.PacksPerFile == 0 {
		o.PacksPerFile = IndexCheckpoint
	}
	if o.BlobSize == 0 {
		o.BlobSize = 1 << 20
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	put := o.PutPack
	if put == nil {
		put = r.put
	}
	perFile := o.BlobsPerPack * o.PacksPerFile
	files := (o.Blobs + perFile - 1) / perFile
	g, gctx := safego.WithContext(ctx)
	g.SetLimit(o.Workers)
	for f := 0; f < files; f++ {
		n := min(perFile, o.Blobs-f*perFile)
		g.Go(func() error { return r.generateIndexFile(gctx, o, f, n, put) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("generate index: %w", err)
	}
	return nil
}

// generateIndexFile writes the placeholder packs of file number f, which
// indexes n blobs, and then the index file.
func (r *Repository) generateIndexFile(ctx context.Context, o GenerateIndexOptions, f, n int, put func(context.Context, string, []byte) error) error {
	var rng *mrand.ChaCha8
	if o.Seed != 0 {
		var seed [32]byte
		binary.LittleEndian.PutUint64(seed[:], o.Seed)
		binary.LittleEndian.PutUint64(seed[8:], uint64(f))
		rng = mrand.NewChaCha8(seed)
	}
	fill := func(b []byte) {
		if rng != nil {
			rng.Read(b)
		} else {
			rand.Read(b)
		}
	}
	var packs []indexPack
	for n > 0 {
		var p indexPack
		fill(p.ID[:])
		fill(p.Key[:])
		k := min(n, o.BlobsPerPack)
		n -= k
		p.Blobs = make([]PackedBlob, k)
		for i := range p.Blobs {
			b := &p.Blobs[i]
			b.Type = BlobData
			fill(b.ID[:])
			b.Offset = uint32(i * o.BlobSize)
			b.Length = uint32(o.BlobSize)
			b.RawLength = uint32(o.BlobSize - Overhead)
		}
		// A valid pack that lists no blob: it exists, and opens.
		data := seal(r.aead, nil, encodePackHeader(p.Key, nil), []byte(aadPackHeader))
		data = binary.LittleEndian.AppendUint32(data, uint32(len(data)))
		if err := put(ctx, PackKey(p.ID), data); err != nil && !errors.Is(err, backend.ErrExists) {
			return err
		}
		packs = append(packs, p)
	}
	data := seal(r.aead, nil, encodeIndex(packs), []byte(aadIndex))
	if err := r.put(ctx, indexPrefix+fileID(data).String(), data); err != nil && !errors.Is(err, backend.ErrExists) {
		return err
	}
	return nil
}
