package repo

import (
	"context"
	"crypto/cipher"
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
	// rangeAlloc, if set, replaces raw when a range does not fit it:
	// SetRangeAllocator.
	rangeAlloc func(old []byte, n int) []byte
	// The cipher of the last pack key seen: the blobs of one pack share
	// it, so a run of them sets it up once.
	aeadKey [keySize]byte
	aead    cipher.AEAD
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

// SetRangeAllocator makes o take the buffers it reads pack ranges into
// (LoadBlobs, LoadBlobsInto) from alloc instead of the Go heap: when a
// range of n bytes does not fit the current buffer old (nil at first),
// alloc(old, n) returns one of at least n bytes, and o never touches old
// again. The buffers stay the caller's: o does not free them, and each must
// stay valid until it is replaced, o is no longer used, or
// SetRangeAllocator is called again (o then forgets its current range
// buffer, whoever gave it). The import uses it for buffers of huge pages,
// which a range is read into without a page fault per 4 KiB. nil restores
// the default.
func (o *BlobOpener) SetRangeAllocator(alloc func(old []byte, n int) []byte) {
	o.rangeAlloc, o.raw = alloc, nil
}

// aeadFor returns the AEAD of a pack key.
func (o *BlobOpener) aeadFor(key *[keySize]byte) (cipher.AEAD, error) {
	if o.aead == nil || o.aeadKey != *key {
		aead, err := newAEAD(key[:])
		if err != nil {
			return nil, err
		}
		o.aead, o.aeadKey = aead, *key
	}
	return o.aead, nil
}

// Open authenticates the sealed bytes of ref, decompresses them into dst
// (appending; dst may be nil) and checks that they hash to ref.ID. Any
// failure is a *BlobError. sealed is left as it is.
func (o *BlobOpener) Open(ref BlobRef, sealed, dst []byte) ([]byte, error) {
	return o.open(ref, sealed, dst, false)
}

// open is Open; with inPlace, a compressed blob is decrypted over its
// sealed bytes (which are then garbage) instead of into o's scratch, so
// that the plaintext the decompressor reads is the memory just decrypted,
// still in cache, and no scratch buffer is touched.
func (o *BlobOpener) open(ref BlobRef, sealed, dst []byte, inPlace bool) ([]byte, error) {
	fail := func(err error) ([]byte, error) { return nil, &BlobError{ID: ref.ID, Pack: ref.Pack, Err: err} }
	if o.r == nil {
		return fail(errors.New("BlobOpener used before it was bound to a repository"))
	}
	if len(sealed) != int(ref.Length) {
		return fail(fmt.Errorf("%w: %d sealed bytes, want %d", errFormat, len(sealed), ref.Length))
	}
	aead, err := o.aeadFor(&ref.PackKey)
	if err != nil {
		return fail(err)
	}
	aad := blobAAD(ref.Type, ref.ID)
	base := len(dst)
	var plain []byte
	if ref.Compressed {
		var z []byte
		if inPlace && len(sealed) >= Overhead {
			// Exact overlap of output and ciphertext is allowed
			// (crypto/cipher.AEAD).
			z, err = open(aead, sealed[nonceSize:nonceSize], sealed, aad)
		} else {
			o.scratch, err = open(aead, o.scratch[:0], sealed, aad)
			z = o.scratch
		}
		if err != nil {
			return fail(err)
		}
		plain, err = o.r.dec.DecodeAll(z, dst)
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
// per call. plain is valid only until fn returns; fn must not retain it,
// nor use o. (LoadBlobsInto hands plaintexts over instead.)
//
// A blob that fails to open is a *BlobError, and fn is not called for it
// or any blob after it. An error from fn stops LoadBlobs and is returned as
// it is. A failed read is returned before any call of fn. The stats are
// valid whatever the error.
func (r *Repository) LoadBlobs(ctx context.Context, o *BlobOpener, refs []BlobRef, fn func(i int, plain []byte) error) (LoadStats, error) {
	return r.loadBlobs(ctx, o, refs, nil, func(i int, plain []byte) error {
		o.plain = plain
		return fn(i, plain)
	})
}

// LoadBlobsInto is LoadBlobs for a caller that keeps the plaintexts, to
// hand them to another goroutine without a copy: blob i is decoded into
// the buffer that buf(i, n) returns, whose capacity must be at least n
// (refs[i].RawLength), and fn(i, plain) owns plain from then on: it may
// retain it after it returns. buf may block (until a buffer is free, say);
// an error from it is returned as it is, like fn's. The pack range stays
// o's, as in LoadBlobs.
func (r *Repository) LoadBlobsInto(ctx context.Context, o *BlobOpener, refs []BlobRef, buf func(i, n int) ([]byte, error), fn func(i int, plain []byte) error) (LoadStats, error) {
	if buf == nil {
		return LoadStats{}, errors.New("LoadBlobsInto: no buffer function")
	}
	return r.loadBlobs(ctx, o, refs, buf, fn)
}

// loadBlobs is LoadBlobs and LoadBlobsInto: without buf, blobs are decoded
// into o.plain.
func (r *Repository) loadBlobs(ctx context.Context, o *BlobOpener, refs []BlobRef, buf func(i, n int) ([]byte, error), fn func(i int, plain []byte) error) (LoadStats, error) {
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
	// Read into the opener's buffer, not mapped. Mapping the range
	// (sessions 14–16) saved the kernel's copy on one host, but on a
	// guest where page faults are expensive it cost more CPU than the
	// copy, and a pack whose pages had aged in the page cache faulted
	// page by page: 4.3 s against 2.4 s for the 4 GiB image (issue 15).
	if o.rangeAlloc != nil && int64(cap(o.raw)) < end-start {
		old := o.raw
		o.raw = nil // not old's any more, whatever alloc returns
		if b := o.rangeAlloc(old, int(end-start)); int64(cap(b)) >= end-start {
			o.raw = b[:0]
		}
	}
	t := time.Now()
	data, err := r.ReadPackInto(ctx, pack, start, end-start, o.raw)
	st.Read = time.Since(t)
	if err != nil {
		return st, err
	}
	o.raw = data[:0]
	st.Bytes = int64(len(data))
	for i, ref := range refs {
		dst := o.plain[:0]
		if buf != nil {
			if dst, err = buf(i, int(ref.RawLength)); err != nil {
				return st, err
			}
			dst = dst[:0]
		}
		t := time.Now()
		s := int64(ref.Offset) - start
		// The range is o's and read again by the next call: each blob is
		// decrypted in place.
		plain, err := o.open(ref, data[s:s+int64(ref.Length)], dst, true)
		st.Open += time.Since(t)
		if err != nil {
			return st, err
		}
		if err := fn(i, plain); err != nil {
			return st, err
		}
	}
	return st, nil
}
