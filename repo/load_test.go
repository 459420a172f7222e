package repo

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"slices"
	"testing"
)

// packRun returns the refs of the pack holding the most blobs, sorted by
// offset.
func packRun(t *testing.T, r *Repository, blobs map[ID][]byte) []BlobRef {
	t.Helper()
	byPack := map[ID][]BlobRef{}
	var best ID
	for id := range blobs {
		ref, ok := r.Lookup(id)
		if !ok {
			t.Fatalf("blob %s not indexed", id.Short())
		}
		byPack[ref.Pack] = append(byPack[ref.Pack], ref)
		if len(byPack[ref.Pack]) > len(byPack[best]) {
			best = ref.Pack
		}
	}
	refs := byPack[best]
	if len(refs) < 4 {
		t.Fatalf("largest pack holds %d blobs, want at least 4", len(refs))
	}
	slices.SortFunc(refs, func(a, b BlobRef) int { return cmp.Compare(a.Offset, b.Offset) })
	return refs
}

func TestLoadBlobs(t *testing.T) {
	r, be := newTestRepo(t)
	blobs, _ := writeBlobs(t, r, 12)
	ctx := context.Background()
	all := packRun(t, r, blobs)
	// Leave out the second blob: it is read (inside the range) but not opened.
	refs := append([]BlobRef{all[0]}, all[2:]...)

	var o BlobOpener // the zero value is ready
	for range 2 {    // the second call reuses o's buffers
		var got []int
		st, err := r.LoadBlobs(ctx, &o, refs, func(i int, plain []byte) error {
			if !bytes.Equal(plain, blobs[refs[i].ID]) {
				t.Errorf("blob %d: wrong plaintext", i)
			}
			got = append(got, i)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(refs) || !slices.IsSorted(got) {
			t.Fatalf("fn called for %v, want 0..%d in order", got, len(refs)-1)
		}
		last := refs[len(refs)-1]
		if want := int64(last.Offset+last.Length) - int64(refs[0].Offset); st.Bytes != want {
			t.Errorf("read %d bytes, want %d", st.Bytes, want)
		}
		if st.Read <= 0 || st.Open <= 0 {
			t.Errorf("stats %+v: want read and open times", st)
		}
	}

	// An error from fn is returned as it is.
	stop := errors.New("stop")
	calls := 0
	if _, err := r.LoadBlobs(ctx, &o, refs, func(int, []byte) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("fn's error: got %v after %d calls, want it after 1", err, calls)
	}

	// Not a run of one pack, sorted and without overlap.
	for _, bad := range [][]BlobRef{{refs[1], refs[0]}, {refs[0], refs[0]}} {
		if _, err := r.LoadBlobs(ctx, &o, bad, func(int, []byte) error { return nil }); !errors.Is(err, errNotARun) {
			t.Errorf("refs out of order: got %v", err)
		}
	}

	// A damaged blob is a *BlobError naming it; fn saw only the blobs
	// before it.
	bad := refs[2]
	flip(t, be, PackKey(bad.Pack), func(int) int { return int(bad.Offset + bad.Length/2) })
	var seen []int
	_, err := r.LoadBlobs(ctx, &o, refs, func(i int, _ []byte) error { seen = append(seen, i); return nil })
	var be2 *BlobError
	if !errors.As(err, &be2) || be2.ID != bad.ID || be2.Pack != bad.Pack || !errors.Is(err, ErrAuth) {
		t.Fatalf("damaged blob: got %v, want a *BlobError for %s wrapping ErrAuth", err, bad.ID.Short())
	}
	if !slices.Equal(seen, []int{0, 1}) {
		t.Errorf("fn called for %v before the damaged blob, want [0 1]", seen)
	}
}

// TestBlobOpenerUnbound: Open on a zero BlobOpener fails instead of
// panicking.
func TestBlobOpenerUnbound(t *testing.T) {
	var o BlobOpener
	var be *BlobError
	if _, err := o.Open(BlobRef{}, nil, nil); !errors.As(err, &be) {
		t.Fatalf("got %v, want a *BlobError", err)
	}
}

// TestLoadBlobsInto: each plaintext lands in the caller's buffer and stays
// intact after later blobs and later calls; a damaged blob is still a
// *BlobError, and an error from buf is returned as it is.
func TestLoadBlobsInto(t *testing.T) {
	r, be := newTestRepo(t)
	blobs, _ := writeBlobs(t, r, 12)
	ctx := context.Background()
	refs := packRun(t, r, blobs)

	var o BlobOpener
	kept := map[int][]byte{}
	for round := range 2 { // the second call reuses o's range buffer
		_, err := r.LoadBlobsInto(ctx, &o, refs, func(i, n int) ([]byte, error) {
			if n != int(refs[i].RawLength) {
				t.Errorf("blob %d: asked for %d bytes, want %d", i, n, refs[i].RawLength)
			}
			return make([]byte, 0, n), nil
		}, func(i int, plain []byte) error {
			if round == 0 {
				kept[i] = plain
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, ref := range refs {
		if !bytes.Equal(kept[i], blobs[ref.ID]) {
			t.Errorf("blob %d: plaintext changed after it was handed over", i)
		}
	}

	stop := errors.New("no buffer")
	if _, err := r.LoadBlobsInto(ctx, &o, refs, func(int, int) ([]byte, error) { return nil, stop }, func(int, []byte) error {
		t.Error("fn called without a buffer")
		return nil
	}); err != stop {
		t.Errorf("buf's error: got %v", err)
	}

	// The range is decrypted in place: damage is still found, and a
	// second read of the same run (after the damage is undone) opens.
	bad := refs[1]
	pos := int(bad.Offset + bad.Length/2)
	flip(t, be, PackKey(bad.Pack), func(int) int { return pos })
	var be2 *BlobError
	_, err := r.LoadBlobsInto(ctx, &o, refs, func(_, n int) ([]byte, error) { return make([]byte, 0, n), nil }, func(int, []byte) error { return nil })
	if !errors.As(err, &be2) || be2.ID != bad.ID || !errors.Is(err, ErrAuth) {
		t.Fatalf("damaged blob: got %v, want a *BlobError for %s wrapping ErrAuth", err, bad.ID.Short())
	}
	flip(t, be, PackKey(bad.Pack), func(int) int { return pos })
	if _, err := r.LoadBlobs(ctx, &o, refs, func(int, []byte) error { return nil }); err != nil {
		t.Fatalf("after the damage was undone: %v", err)
	}
}

// TestBlobOpenerRangeAllocator: with an allocator, ranges are read into
// its buffers (asked for only when a range does not fit, with the buffer
// replaced), and an allocator that returns too little leaves o on the Go
// heap rather than failing.
func TestBlobOpenerRangeAllocator(t *testing.T) {
	r, _ := newTestRepo(t)
	blobs, _ := writeBlobs(t, r, 12)
	ctx := context.Background()
	refs := packRun(t, r, blobs)
	span := func(refs []BlobRef) int {
		last := refs[len(refs)-1]
		return int(last.Offset+last.Length) - int(refs[0].Offset)
	}

	var o BlobOpener
	type call struct{ old, n int }
	var calls []call
	var given [][]byte
	o.SetRangeAllocator(func(old []byte, n int) []byte {
		calls = append(calls, call{cap(old), n})
		b := make([]byte, n)
		given = append(given, b)
		return b
	})
	check := func(refs []BlobRef) {
		t.Helper()
		if _, err := r.LoadBlobs(ctx, &o, refs, func(i int, plain []byte) error {
			if !bytes.Equal(plain, blobs[refs[i].ID]) {
				t.Errorf("blob %d: wrong plaintext", i)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	check(refs[:2])     // first range: allocated
	check(refs[:1])     // fits: no call
	check(refs)         // larger: replaced
	check(refs[1:][:1]) // fits
	want := []call{{0, span(refs[:2])}, {span(refs[:2]), span(refs)}}
	if !slices.Equal(calls, want) {
		t.Fatalf("allocator calls (cap of old, n) %v, want %v", calls, want)
	}
	// The last range read lies in the last buffer given (the pack bytes
	// after the in-place decryption are garbage, so compare addresses).
	if last := given[len(given)-1]; &o.raw[:1][0] != &last[0] {
		t.Error("the range was not read into the allocator's buffer")
	}

	// Set again (here to the default), o forgets the last buffer given:
	// the caller may free it now.
	mine := given[len(given)-1]
	o.SetRangeAllocator(nil)
	check(refs)
	if &o.raw[:1][0] == &mine[0] {
		t.Error("after SetRangeAllocator(nil), the range was read into the old allocator's buffer")
	}

	// An allocator that returns too small a buffer: read into the heap.
	var short BlobOpener
	short.SetRangeAllocator(func([]byte, int) []byte { return make([]byte, 1) })
	if _, err := r.LoadBlobs(ctx, &short, refs, func(i int, plain []byte) error {
		if !bytes.Equal(plain, blobs[refs[i].ID]) {
			t.Errorf("short allocator: blob %d: wrong plaintext", i)
		}
		return nil
	}); err != nil {
		t.Fatalf("short allocator: %v", err)
	}
}
