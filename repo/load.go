package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/blockmover/blockmover/repo/backend"
)

// ReadPack reads length bytes of pack id at offset.
func (r *Repository) ReadPack(ctx context.Context, id ID, offset, length int64) ([]byte, error) {
	return r.ReadPackInto(ctx, id, offset, length, nil)
}

// ReadPackInto is ReadPack into buf, reused when it is large enough.
func (r *Repository) ReadPackInto(ctx context.Context, id ID, offset, length int64, buf []byte) ([]byte, error) {
	b, err := backend.ReadInto(ctx, r.be, PackKey(id), offset, length, buf)
	if err != nil {
		return nil, fmt.Errorf("reading pack %s: %w", id.Short(), err)
	}
	return b, nil
}

// BlobError reports a blob that could not be read back intact.
type BlobError struct {
	ID   ID
	Pack ID
	Err  error
}

func (e *BlobError) Error() string {
	if e.Pack.IsZero() {
		return fmt.Sprintf("blob %s: %v", e.ID.Short(), e.Err)
	}
	return fmt.Sprintf("blob %s in pack %s: %v", e.ID.Short(), e.Pack, e.Err)
}

func (e *BlobError) Unwrap() error { return e.Err }

// ErrIDMismatch: a blob decrypted but its content does not hash to its ID.
var ErrIDMismatch = errors.New("content does not match its ID")

// BlobOpener decrypts, decompresses and verifies blobs. It is not safe for
// concurrent use: make one per goroutine with NewBlobOpener.
type BlobOpener struct {
	r       *Repository
	h       *Hasher
	scratch []byte
}

// NewBlobOpener returns a BlobOpener.
func (r *Repository) NewBlobOpener() *BlobOpener {
	return &BlobOpener{r: r, h: r.NewHasher()}
}

// Open authenticates the sealed bytes of ref, decompresses them into dst
// (appending; dst may be nil) and checks that they hash to ref.ID. Any
// failure is a *BlobError.
func (o *BlobOpener) Open(ref BlobRef, sealed, dst []byte) ([]byte, error) {
	fail := func(err error) ([]byte, error) { return nil, &BlobError{ID: ref.ID, Pack: ref.Pack, Err: err} }
	if len(sealed) != int(ref.Length) {
		return fail(fmt.Errorf("%w: %d sealed bytes, want %d", errFormat, len(sealed), ref.Length))
	}
	aead, err := newAEAD(ref.PackKey[:])
	if err != nil {
		return fail(err)
	}
	aad := blobAAD(ref.Type, ref.ID)
	base := len(dst)
	var plain []byte
	if ref.Compressed {
		o.scratch, err = open(aead, o.scratch[:0], sealed, aad)
		if err != nil {
			return fail(err)
		}
		plain, err = o.r.dec.DecodeAll(o.scratch, dst)
		if err != nil {
			return fail(fmt.Errorf("%w: zstd: %w", errFormat, err))
		}
	} else if plain, err = open(aead, dst, sealed, aad); err != nil {
		return fail(err)
	}
	got := plain[base:]
	if len(got) != int(ref.RawLength) {
		return fail(fmt.Errorf("%w: %d bytes, want %d", errFormat, len(got), ref.RawLength))
	}
	var id ID
	if ref.Type == BlobPage {
		id = o.h.pageID(got)
	} else {
		id = o.h.Sum(got)
	}
	if id != ref.ID {
		return fail(ErrIDMismatch)
	}
	return plain, nil
}

// LoadBlob reads and verifies blob id, appending it to dst.
func (r *Repository) LoadBlob(ctx context.Context, o *BlobOpener, id ID, dst []byte) ([]byte, error) {
	ref, ok := r.Lookup(id)
	if !ok {
		return nil, &BlobError{ID: id, Err: ErrBlobMissing}
	}
	sealed, err := r.ReadPack(ctx, ref.Pack, int64(ref.Offset), int64(ref.Length))
	if err != nil {
		return nil, &BlobError{ID: id, Pack: ref.Pack, Err: err}
	}
	return o.Open(ref, sealed, dst)
}

// ErrBlobMissing: no index entry names the blob.
var ErrBlobMissing = errors.New("blob is not in the index")

// LoadPage reads page i of s.
func (r *Repository) LoadPage(ctx context.Context, o *BlobOpener, s *Snapshot, i int) ([]Entry, error) {
	plain, err := r.LoadBlob(ctx, o, s.Pages[i], nil)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s page %d: %w", s.ID.Short(), i, err)
	}
	start, end := s.PageRange(i)
	entries, err := DecodePage(plain, end-start)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s page %d: %w", s.ID.Short(), i, err)
	}
	return entries, nil
}
