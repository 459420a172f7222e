package repo

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// BlobOpener decrypts, decompresses and verifies blobs, and holds the
// buffers of one reading goroutine: the scratch of decompression, and the
// pack range and plaintext of LoadBlobs, each grown to the largest seen
// and reused. It is not safe for concurrent use: one per goroutine.
//
// The zero value is ready for Repository.LoadBlobs, LoadBlob and LoadPage,
// which bind it to their repository (again, if it was bound to another);
// Open needs one bound by NewBlobOpener or by one of those calls.
type BlobOpener struct {
	r       *Repository
	h       *Hasher
	scratch []byte
	raw     []byte // LoadBlobs: the pack range
	plain   []byte // LoadBlobs: the plaintext handed to fn
}

// NewBlobOpener returns a BlobOpener bound to r.
func (r *Repository) NewBlobOpener() *BlobOpener {
	o := &BlobOpener{}
	o.bind(r)
	return o
}

// bind makes o open blobs of r.
func (o *BlobOpener) bind(r *Repository) {
	if o.r != r {
		o.r, o.h = r, r.NewHasher()
	}
}

// Open authenticates the sealed bytes of ref, decompresses them into dst
// (appending; dst may be nil) and checks that they hash to ref.ID. Any
// failure is a *BlobError.
func (o *BlobOpener) Open(ref BlobRef, sealed, dst []byte) ([]byte, error) {
	fail := func(err error) ([]byte, error) { return nil, &BlobError{ID: ref.ID, Pack: ref.Pack, Err: err} }
	if o.r == nil {
		return fail(errors.New("BlobOpener used before it was bound to a repository"))
	}
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
	o.bind(r)
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

// ErrIndexDamaged: an index file cannot be read. Readers skip it (with a
// warning); gc refuses to run, since what only it lists would look
// unused. RepairIndex rebuilds the index from the packs.
var ErrIndexDamaged = errors.New("index file is damaged")

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

// LoadStats reports what one LoadBlobs call did, for stage timings.
type LoadStats struct {
	Bytes int64         // read from the backend
	Read  time.Duration // the ranged read
	Open  time.Duration // decrypting, decompressing, verifying; fn excluded
}

// errNotARun: LoadBlobs was handed refs that are not a run of one pack.
var errNotARun = errors.New("LoadBlobs: blobs are not a sorted, non-overlapping run of one pack")

// LoadBlobs reads the blobs refs with one ranged read of their pack, from
// the first blob's offset to the last blob's end, then opens each blob in
// order (authenticates, decompresses, checks its ID) and calls fn(i, plain)
// with refs[i]'s plaintext. refs must be all of one pack, sorted by
// offset and not overlapping (blobs not asked for may lie between them and
// are read but not opened): the caller bounds the range by choosing the
// run. No refs, no read.
//
// Buffers belong to o, which the caller provides, one per goroutine (the
// zero value is ready): the range read and the plaintext are kept in o and
// reused by the next call, so a warm caller allocates nothing per blob or
// per call beyond the cipher setup of each blob. plain is valid only until
// fn returns; fn must not retain it, nor use o.
//
// A blob that fails to open is a *BlobError, and fn is not called for it
// or any blob after it. An error from fn stops LoadBlobs and is returned as
// it is. A failed read is returned before any call of fn. The stats are
// valid whatever the error.
func (r *Repository) LoadBlobs(ctx context.Context, o *BlobOpener, refs []BlobRef, fn func(i int, plain []byte) error) (LoadStats, error) {
	var st LoadStats
	if len(refs) == 0 {
		return st, nil
	}
	pack := refs[0].Pack
	start, end := int64(refs[0].Offset), int64(refs[0].Offset)+int64(refs[0].Length)
	for _, ref := range refs[1:] {
		if ref.Pack != pack || int64(ref.Offset) < end {
			return st, errNotARun
		}
		end = int64(ref.Offset) + int64(ref.Length)
	}
	o.bind(r)
	t := time.Now()
	data, err := r.ReadPackInto(ctx, pack, start, end-start, o.raw)
	st.Read = time.Since(t)
	if err != nil {
		return st, err
	}
	o.raw = data[:0]
	st.Bytes = int64(len(data))
	for i, ref := range refs {
		t := time.Now()
		s := int64(ref.Offset) - start
		plain, err := o.Open(ref, data[s:s+int64(ref.Length)], o.plain[:0])
		st.Open += time.Since(t)
		if err != nil {
			return st, err
		}
		o.plain = plain
		if err := fn(i, plain); err != nil {
			return st, err
		}
	}
	return st, nil
}
