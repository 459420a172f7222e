// Package backendtest is the conformance suite for backend.Backend, in the
// spirit of testing/fstest.TestFS and restic's backend test suite: every
// implementation, and every wrapper stack, runs the same tests in a few
// lines:
//
//	func TestBackend(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T) backend.Backend {
//			be, err := fs.Create(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return be
//		})
//	}
//
// Where the Backend contract allows a choice the suite accepts either
// answer; the choices are noted on the tests. Two are worth knowing:
//
//   - Re-putting an existing key with the same bytes may return nil or
//     ErrExists: both are harmless, and the Retry wrapper turns a retried
//     Put's ErrExists into nil when the stored size matches.
//   - Conflicting contents put under one key always differ in length, so
//     that the size check of the Retry wrapper is not misled; overwrite
//     detection does not depend on the length.
package backendtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/blockmover/blockmover/repo/backend"
)

// Run runs the conformance suite as subtests of t. Each subtest gets a
// fresh, empty backend from newBackend, which may register cleanups with
// t.Cleanup; Run closes the backend when the subtest ends (so Close must
// tolerate being called again by a cleanup of newBackend).
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	t.Helper()
	for _, tc := range suite() {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t)
			t.Cleanup(func() {
				if err := be.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, be)
		})
	}
}

type test struct {
	name string
	fn   func(t *testing.T, be backend.Backend)
}

func suite() []test {
	return []test{
		{"Empty", testEmpty},
		{"PutGet", testPutGet},
		{"PutDoesNotRetain", testPutDoesNotRetain},
		{"PutExisting", testPutExisting},
		{"GetRange", testGetRange},
		{"GetRangeEmptyObject", testGetRangeEmptyObject},
		{"Missing", testMissing},
		{"Stat", testStat},
		{"List", testList},
		{"ListStop", testListStop},
		{"ListCallbackUsesBackend", testListCallbackUsesBackend},
		{"Delete", testDelete},
		{"ConcurrentPutDistinct", testConcurrentPutDistinct},
		{"ConcurrentPutSameKey", testConcurrentPutSameKey},
		{"ConcurrentPutSameContent", testConcurrentPutSameContent},
		{"ConcurrentGet", testConcurrentGet},
		{"AtomicVisibility", testAtomicVisibility},
		{"ContextDone", testContextDone},
		{"OddKeys", testOddKeys},
		{"InvalidKeys", testInvalidKeys},
	}
}

// randomData returns n reproducible pseudo-random bytes.
func randomData(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	binary.LittleEndian.PutUint64(s[8:], uint64(n))
	buf := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(buf) // never fails
	return buf
}

func put(t testing.TB, be backend.Backend, key string, data []byte) {
	t.Helper()
	if err := be.Put(t.Context(), key, data); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(data), err)
	}
}

// get reads a range with io.ReadAll, so through the reader's Read method.
func get(t testing.TB, be backend.Backend, key string, offset, length int64) []byte {
	t.Helper()
	rc, err := be.Get(t.Context(), key, offset, length)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): %v", key, offset, length, err)
	}
	data, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil && cerr != nil {
		t.Fatalf("Get(%q, %d, %d): Close: %v", key, offset, length, cerr)
	}
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): read: %v", key, offset, length, err)
	}
	return data
}

// checkContent fails t unless key holds exactly want.
func checkContent(t testing.TB, be backend.Backend, key string, want []byte) {
	t.Helper()
	got := get(t, be, key, 0, -1)
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q): got %d bytes %s, want %d bytes %s", key, len(got), head(got), len(want), head(want))
	}
}

func head(b []byte) string {
	if len(b) > 8 {
		return fmt.Sprintf("%x…", b[:8])
	}
	return fmt.Sprintf("%x", b)
}

// wantErr fails t unless errors.Is(err, target).
func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want one matching %v", what, err, target)
	}
}

// listAll returns the objects with prefix, failing on duplicates.
func listAll(t testing.TB, ctx context.Context, be backend.Backend, prefix string) map[string]backend.ObjectInfo {
	t.Helper()
	got := make(map[string]backend.ObjectInfo)
	err := be.List(ctx, prefix, func(fi backend.ObjectInfo) error {
		if _, dup := got[fi.Key]; dup {
			t.Errorf("List(%q): %q listed twice", prefix, fi.Key)
		}
		got[fi.Key] = fi
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}
