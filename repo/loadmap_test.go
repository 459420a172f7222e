package repo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/repo/backend"
)

// mappedTestRepo returns a repository on the fs backend wrapped as a
// directory repository is opened (retry, connection limit, observation),
// the directory, and the count of Get requests observed.
func mappedTestRepo(t *testing.T) (*Repository, string, *atomic.Int64) {
	t.Helper()
	dir := t.TempDir()
	var gets atomic.Int64
	obs := backend.NewObserve(fsBackend(t, dir), func(e backend.RequestEvent) {
		if e.Op == backend.OpGet {
			gets.Add(1)
		}
	})
	be := backend.NewRetry(backend.NewLimit(obs, 2), backend.RetryOptions{MaxAttempts: 2})
	r, err := Init(context.Background(), be, testPassword, InitOptions{KDF: testKDF, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, dir, &gets
}

// TestLoadBlobsMapped: from a directory repository, LoadBlobs and
// LoadBlobsInto map the pack range (nothing is read into the opener's
// buffer), give the same plaintexts, and still report a damaged blob as a
// *BlobError; the mapping passes through the wrappers, each mapping
// observed as a Get.
func TestLoadBlobsMapped(t *testing.T) {
	r, dir, gets := mappedTestRepo(t)
	blobs, _ := writeBlobs(t, r, 12)
	refs := packRun(t, r, blobs)
	ctx := context.Background()
	var o BlobOpener
	before := gets.Load()
	for range 2 {
		n := 0
		st, err := r.LoadBlobs(ctx, &o, refs, func(i int, plain []byte) error {
			if !bytes.Equal(plain, blobs[refs[i].ID]) {
				t.Errorf("blob %d: wrong plaintext", i)
			}
			n++
			return nil
		})
		if err != nil || n != len(refs) {
			t.Fatalf("LoadBlobs: %v after %d of %d blobs", err, n, len(refs))
		}
		last := refs[len(refs)-1]
		if want := int64(last.Offset+last.Length) - int64(refs[0].Offset); st.Bytes != want || st.Open <= 0 {
			t.Errorf("stats %+v: want %d bytes and an open time", st, want)
		}
	}
	if o.noMap || cap(o.raw) != 0 {
		t.Errorf("the pack range was read into the opener (noMap %v, %d bytes of buffer), not mapped", o.noMap, cap(o.raw))
	}
	if got := gets.Load() - before; got != 2 {
		t.Errorf("%d Gets observed for two mapped loads, want 2", got)
	}
	// LoadBlobsInto: the plaintexts are the caller's and stay intact.
	kept := map[int][]byte{}
	if _, err := r.LoadBlobsInto(ctx, &o, refs, func(_, n int) ([]byte, error) { return make([]byte, 0, n), nil },
		func(i int, plain []byte) error { kept[i] = plain; return nil }); err != nil {
		t.Fatal(err)
	}
	for i, ref := range refs {
		if !bytes.Equal(kept[i], blobs[ref.ID]) {
			t.Errorf("LoadBlobsInto blob %d: wrong plaintext", i)
		}
	}
	// A damaged blob in the mapped range is a *BlobError; the file is
	// left as it was (the mapping is read-only).
	bad := refs[1]
	path := filepath.Join(dir, filepath.FromSlash(PackKey(bad.Pack)))
	flipFile(t, path, int64(bad.Offset+bad.Length/2))
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.LoadBlobs(ctx, &o, refs, func(int, []byte) error { return nil })
	var be *BlobError
	if !errors.As(err, &be) || be.ID != bad.ID || !errors.Is(err, ErrAuth) {
		t.Fatalf("damaged blob: got %v, want a *BlobError for %s wrapping ErrAuth", err, bad.ID.Short())
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
		t.Error("loading through the mapping changed the pack file")
	}
}

// TestLoadBlobsMappedFileShrinks: a pack file truncated while its range
// is mapped (by something outside the repository: packs never change)
// makes the load fail with an error, not a SIGBUS that kills the process.
func TestLoadBlobsMappedFileShrinks(t *testing.T) {
	r, dir, _ := mappedTestRepo(t)
	blobs, _ := writeBlobs(t, r, 12)
	refs := packRun(t, r, blobs)
	path := filepath.Join(dir, filepath.FromSlash(PackKey(refs[0].Pack)))
	var o BlobOpener
	_, err := r.LoadBlobsInto(context.Background(), &o, refs, func(i, n int) ([]byte, error) {
		if i == 1 {
			// Between the first blob and the second: the pages of the
			// rest are gone from the mapping.
			if err := os.Truncate(path, 0); err != nil {
				return nil, err
			}
		}
		return make([]byte, 0, n), nil
	}, func(int, []byte) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "changed under the read") {
		t.Fatalf("got %v, want the error of a mapped file that shrank", err)
	}
	if o.noMap {
		t.Error("the range was not mapped")
	}
}

// TestLoadBlobsUnmappable: a backend that cannot map (the in-memory one;
// a wrapper of one) is read as before, and asked to map only once.
func TestLoadBlobsUnmappable(t *testing.T) {
	r, _ := newTestRepo(t)
	blobs, _ := writeBlobs(t, r, 12)
	refs := packRun(t, r, blobs)
	var o BlobOpener
	for range 2 {
		if _, err := r.LoadBlobs(context.Background(), &o, refs, func(i int, plain []byte) error {
			if !bytes.Equal(plain, blobs[refs[i].ID]) {
				t.Errorf("blob %d: wrong plaintext", i)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if !o.noMap || cap(o.raw) == 0 {
		t.Errorf("noMap %v, buffer %d bytes: want the range read into the opener", o.noMap, cap(o.raw))
	}
}
