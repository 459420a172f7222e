package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
)

// testEmpty: a fresh backend lists nothing and finds nothing.
func testEmpty(t *testing.T, be backend.Backend) {
	for _, prefix := range []string{"", "d", "data/", "config"} {
		if got := listAll(t, t.Context(), be, prefix); len(got) != 0 {
			t.Errorf("List(%q) on an empty backend: %d objects", prefix, len(got))
		}
	}
	_, err := be.Stat(t.Context(), "config")
	wantErr(t, "Stat on an empty backend", err, backend.ErrNotFound)
}

// testPutGet: round trips of several sizes, whole and as ranges.
func testPutGet(t *testing.T, be backend.Backend) {
	for i, size := range []int{0, 1, 100, 4096 + 3, 5<<20 + 17} {
		key := fmt.Sprintf("data/%02x/size-%d", i, size)
		want := randomData(uint64(i), size)
		put(t, be, key, want)

		fi, err := be.Stat(t.Context(), key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if fi.Key != key || fi.Size != int64(size) {
			t.Errorf("Stat(%q) = %q, %d bytes; want %q, %d bytes", key, fi.Key, fi.Size, key, size)
		}
		checkContent(t, be, key, want)
		if got := get(t, be, key, 0, int64(size)); !bytes.Equal(got, want) {
			t.Errorf("Get(%q, 0, %d): content differs", key, size)
		}
		got, err := backend.ReadAll(t.Context(), be, key, 0, -1)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("ReadAll(%q): %d bytes, %v; want %d bytes", key, len(got), err, size)
		}
		if size <= 8192 {
			// The reader's full behaviour, including ReadAt and Seek if it
			// offers them.
			rc, err := be.Get(t.Context(), key, 0, -1)
			if err != nil {
				t.Fatalf("Get(%q): %v", key, err)
			}
			if err := iotest.TestReader(rc, want); err != nil {
				t.Errorf("Get(%q): reader misbehaves: %v", key, err)
			}
			rc.Close()
			rc, err = be.Get(t.Context(), key, 0, -1)
			if err != nil {
				t.Fatalf("Get(%q): %v", key, err)
			}
			got, err := io.ReadAll(iotest.OneByteReader(rc))
			rc.Close()
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("Get(%q) read a byte at a time: %d bytes, %v", key, len(got), err)
			}
		}
	}
}

// testPutDoesNotRetain: the caller may reuse its buffer once Put returns.
func testPutDoesNotRetain(t *testing.T, be backend.Backend) {
	buf := randomData(1, 4096)
	want := bytes.Clone(buf)
	put(t, be, "data/00/retain", buf)
	for i := range buf {
		buf[i] = 0xff
	}
	checkContent(t, be, "data/00/retain", want)
}

// testPutExisting: Put never overwrites. Re-putting identical bytes may
// return nil or ErrExists.
func testPutExisting(t *testing.T, be backend.Backend) {
	const key = "data/ab/existing"
	orig := randomData(1, 1000)
	put(t, be, key, orig)

	err := be.Put(t.Context(), key, randomData(2, 1001))
	wantErr(t, "Put over an existing key with other bytes", err, backend.ErrExists)
	checkContent(t, be, key, orig)

	if err := be.Put(t.Context(), key, orig); err != nil && !errors.Is(err, backend.ErrExists) {
		t.Errorf("Put over an existing key with the same bytes: %v, want nil or ErrExists", err)
	}
	checkContent(t, be, key, orig)

	err = be.Put(t.Context(), key, nil)
	wantErr(t, "Put of an empty object over an existing key", err, backend.ErrExists)
	checkContent(t, be, key, orig)

	if got := listAll(t, t.Context(), be, ""); len(got) != 1 || got[key].Size != int64(len(orig)) {
		t.Errorf("List after refused Puts: %v, want only %q of %d bytes", got, key, len(orig))
	}
}

type rangeCase struct {
	offset, length int64
	ok             bool
}

func checkRanges(t *testing.T, be backend.Backend, key string, obj []byte, cases []rangeCase) {
	t.Helper()
	for _, c := range cases {
		rc, err := be.Get(t.Context(), key, c.offset, c.length)
		if !c.ok {
			if err == nil {
				rc.Close()
			}
			wantErr(t, fmt.Sprintf("Get(%d bytes, offset %d, length %d)", len(obj), c.offset, c.length), err, backend.ErrInvalidRange)
			continue
		}
		if err != nil {
			t.Errorf("Get(%d bytes, offset %d, length %d): %v", len(obj), c.offset, c.length, err)
			continue
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		end := int64(len(obj))
		if c.length >= 0 {
			end = c.offset + c.length
		}
		if err != nil || !bytes.Equal(got, obj[c.offset:end]) {
			t.Errorf("Get(%d bytes, offset %d, length %d): %d bytes, %v; want %d bytes",
				len(obj), c.offset, c.length, len(got), err, end-c.offset)
		}
	}
}

// testGetRange: ranged reads, the empty range at the end, and ranges
// outside the object (including ones whose end overflows int64).
func testGetRange(t *testing.T, be backend.Backend) {
	const key = "data/ab/range"
	obj := randomData(3, 4099)
	put(t, be, key, obj)
	n := int64(len(obj))
	checkRanges(t, be, key, obj, []rangeCase{
		{0, -1, true},
		{0, n, true},
		{0, 0, true},
		{0, 1, true},
		{1, -1, true},
		{10, 100, true},
		{n / 2, n - n/2, true},
		{n - 1, 1, true},
		{n - 1, -1, true},
		{n, 0, true},
		{n, -1, true},
		{n, 1, false},
		{n + 1, -1, false},
		{n + 1, 0, false},
		{0, n + 1, false},
		{n - 1, 2, false},
		{-1, -1, false},
		{-1, 1, false},
		{1 << 62, 1, false},
		{1, math.MaxInt64, false},
		{math.MaxInt64, -1, false},
	})
}

func testGetRangeEmptyObject(t *testing.T, be backend.Backend) {
	const key = "data/ab/empty"
	put(t, be, key, nil)
	checkRanges(t, be, key, nil, []rangeCase{
		{0, -1, true},
		{0, 0, true},
		{0, 1, false},
		{1, -1, false},
		{1, 0, false},
	})
}

// testMissing: missing keys are ErrNotFound, whatever the range, also where
// a missing key's prefix is an object or a "directory" of other keys.
func testMissing(t *testing.T, be backend.Backend) {
	ctx := t.Context()
	const present = "data/ab/present"
	want := randomData(4, 10)
	put(t, be, present, want)
	for _, key := range []string{"config", "data/00/missing", "data", "data/ab", "data/a", "data/ab/present/below", "data/ab/presen"} {
		_, err := be.Get(ctx, key, 0, -1)
		wantErr(t, fmt.Sprintf("Get(%q)", key), err, backend.ErrNotFound)
		_, err = be.Get(ctx, key, 5, 10)
		wantErr(t, fmt.Sprintf("Get(%q, 5, 10)", key), err, backend.ErrNotFound)
		_, err = be.Stat(ctx, key)
		wantErr(t, fmt.Sprintf("Stat(%q)", key), err, backend.ErrNotFound)
		err = be.Delete(ctx, key)
		wantErr(t, fmt.Sprintf("Delete(%q)", key), err, backend.ErrNotFound)
	}
	checkContent(t, be, present, want)
}

// testStat: size, key and a modification time near the local clock.
func testStat(t *testing.T, be backend.Backend) {
	const slack = 10 * time.Minute // allow for a server's clock and coarse timestamps
	const key = "index/9a"
	before := time.Now()
	put(t, be, key, randomData(5, 321))
	after := time.Now()
	fi, err := be.Stat(t.Context(), key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if fi.Key != key || fi.Size != 321 {
		t.Errorf("Stat = %q, %d bytes; want %q, 321 bytes", fi.Key, fi.Size, key)
	}
	if fi.ModTime.Before(before.Add(-slack)) || fi.ModTime.After(after.Add(slack)) {
		t.Errorf("Stat: ModTime %v, want within %v of [%v, %v]", fi.ModTime, slack, before, after)
	}
	li := listAll(t, t.Context(), be, key)[key]
	if li.Size != 321 || li.ModTime.IsZero() {
		t.Errorf("List: %+v, want 321 bytes and a ModTime", li)
	}
}

// testList: prefixes are plain string prefixes, not directories.
func testList(t *testing.T, be backend.Backend) {
	objects := map[string]int{
		"config":         10,
		"d":              11,
		"data/ab/ab12cd": 12,
		"data/ab/ab34ef": 13,
		"data/cd/cd56":   0,
		"dx/1":           15,
		"index/9a":       16,
		"keys/3f":        17,
	}
	for key, size := range objects {
		put(t, be, key, randomData(uint64(size), size))
	}
	data := []string{"data/ab/ab12cd", "data/ab/ab34ef", "data/cd/cd56"}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", slices.Collect(func(yield func(string) bool) {
			for k := range objects {
				if !yield(k) {
					return
				}
			}
		})},
		{"d", append([]string{"d", "dx/1"}, data...)},
		{"da", data},
		{"data", data},
		{"data/", data},
		{"data/ab", data[:2]},
		{"data/ab/", data[:2]},
		{"data/ab/ab1", data[:1]},
		{"data/ab/ab12cd", data[:1]},
		{"data/ab/ab12cde", nil},
		{"data/ac", nil},
		{"data/c", data[2:]},
		{"confi", []string{"config"}},
		{"config", []string{"config"}},
		{"config/", nil},
		{"x", nil},
		{"data//", nil},
		{"/data", nil},
		{"./data", nil},
		{"data/../", nil},
		{"data/ab/../", nil},
	} {
		got := listAll(t, t.Context(), be, c.prefix)
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range got {
				if !yield(k) {
					return
				}
			}
		})
		want := slices.Sorted(slices.Values(c.want))
		if !slices.Equal(keys, want) {
			t.Errorf("List(%q) = %q, want %q", c.prefix, keys, want)
		}
		for key, fi := range got {
			if fi.Size != int64(objects[key]) || fi.ModTime.IsZero() {
				t.Errorf("List(%q): %q: %d bytes, ModTime %v; want %d bytes and a ModTime",
					c.prefix, key, fi.Size, fi.ModTime, objects[key])
			}
		}
	}
}

// testListStop: an error from fn stops the listing and is returned as is,
// even if it is an error that a directory walk would interpret.
func testListStop(t *testing.T, be backend.Backend) {
	for i := range 10 {
		put(t, be, fmt.Sprintf("data/%02x/stop-%d", i%3, i), randomData(uint64(i), i))
	}
	for _, stop := range []error{errors.New("stop here"), iofs.SkipDir, iofs.SkipAll, io.EOF} {
		calls := 0
		err := be.List(t.Context(), "data/", func(backend.ObjectInfo) error {
			calls++
			if calls == 3 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			t.Errorf("List with fn failing with %v: got %v", stop, err)
		}
		if calls != 3 {
			t.Errorf("List with fn failing with %v on the 3rd call: fn called %d times", stop, calls)
		}
	}
}

// testListCallbackUsesBackend: fn may call the backend, as a garbage
// collector deleting what it lists does.
func testListCallbackUsesBackend(t *testing.T, be backend.Backend) {
	ctx := t.Context()
	for i := range 6 {
		put(t, be, fmt.Sprintf("data/%02x/gc-%d", i%2, i), randomData(uint64(i), 10+i))
	}
	put(t, be, "index/keep", []byte("keep"))
	n := 0
	err := be.List(ctx, "data/", func(fi backend.ObjectInfo) error {
		n++
		if _, err := be.Stat(ctx, fi.Key); err != nil {
			return fmt.Errorf("stat in fn: %w", err)
		}
		if _, err := backend.ReadAll(ctx, be, fi.Key, 0, -1); err != nil {
			return fmt.Errorf("get in fn: %w", err)
		}
		if err := be.Delete(ctx, fi.Key); err != nil {
			return fmt.Errorf("delete in fn: %w", err)
		}
		return nil
	})
	if err != nil || n != 6 {
		t.Fatalf("List deleting in fn: %d calls, %v; want 6 calls", n, err)
	}
	if got := listAll(t, ctx, be, ""); len(got) != 1 {
		t.Errorf("after deleting in List: %d objects left, want 1", len(got))
	}
}

// testDelete: a deleted key is gone everywhere and may be put again.
func testDelete(t *testing.T, be backend.Backend) {
	ctx := t.Context()
	const key = "data/ab/deleted"
	put(t, be, key, randomData(6, 100))
	put(t, be, "data/ab/neighbour", randomData(7, 100))
	if err := be.Delete(ctx, key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := be.Get(ctx, key, 0, -1)
	wantErr(t, "Get after Delete", err, backend.ErrNotFound)
	_, err = be.Stat(ctx, key)
	wantErr(t, "Stat after Delete", err, backend.ErrNotFound)
	if _, ok := listAll(t, ctx, be, "")[key]; ok {
		t.Errorf("List after Delete still lists %q", key)
	}
	wantErr(t, "second Delete", be.Delete(ctx, key), backend.ErrNotFound)
	checkContent(t, be, "data/ab/neighbour", randomData(7, 100))

	again := randomData(8, 200)
	put(t, be, key, again)
	checkContent(t, be, key, again)
}

// testConcurrentPutDistinct: many writers, then many readers.
func testConcurrentPutDistinct(t *testing.T, be backend.Backend) {
	const workers, perWorker = 8, 16
	ctx := t.Context()
	key := func(w, i int) string { return fmt.Sprintf("data/%02x/w%d-%d", (w*perWorker+i)%7, w, i) }
	content := func(w, i int) []byte { return randomData(uint64(w*perWorker+i), (w*perWorker+i)*977%20000) }
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if err := be.Put(ctx, key(w, i), content(w, i)); err != nil {
					t.Errorf("Put(%q): %v", key(w, i), err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if got := listAll(t, ctx, be, "data/"); len(got) != workers*perWorker {
		t.Errorf("List: %d objects, want %d", len(got), workers*perWorker)
	}
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				got, err := backend.ReadAll(ctx, be, key(w, i), 0, -1)
				if err != nil || !bytes.Equal(got, content(w, i)) {
					t.Errorf("Get(%q): %d bytes, %v; want %d bytes", key(w, i), len(got), err, len(content(w, i)))
				}
			}
		})
	}
	wg.Wait()
}

// testConcurrentPutSameKey: writers race to create one key with different
// contents; exactly one wins, the others get ErrExists, and the object is
// the winner's, whole.
func testConcurrentPutSameKey(t *testing.T, be backend.Backend) {
	const writers = 16
	for round := range 4 {
		key := fmt.Sprintf("data/ab/race-%d", round)
		contents := make([][]byte, writers)
		for i := range contents {
			contents[i] = randomData(uint64(round*writers+i), 1000+7*i+round*10000)
		}
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				<-start
				errs[i] = be.Put(t.Context(), key, contents[i])
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("round %d: writers %d and %d both succeeded", round, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, backend.ErrExists):
				t.Errorf("round %d: writer %d: %v, want nil or ErrExists", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer succeeded", round)
		}
		checkContent(t, be, key, contents[winner])
	}
}

// testConcurrentPutSameContent: writers race to store identical bytes; at
// least one succeeds, the rest may get ErrExists.
func testConcurrentPutSameContent(t *testing.T, be backend.Backend) {
	const writers = 16
	const key = "data/cd/same"
	want := randomData(9, 64<<10)
	var ok atomic.Int32
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			<-start
			err := be.Put(t.Context(), key, want)
			switch {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, backend.ErrExists):
				t.Errorf("Put: %v, want nil or ErrExists", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok.Load() == 0 {
		t.Fatal("no writer succeeded")
	}
	checkContent(t, be, key, want)
}

// testConcurrentGet: readers of one object do not disturb each other.
func testConcurrentGet(t *testing.T, be backend.Backend) {
	const key = "data/ef/shared"
	obj := randomData(10, 1<<20)
	put(t, be, key, obj)
	var wg sync.WaitGroup
	for r := range 8 {
		wg.Go(func() {
			for i := range 20 {
				off := int64((r*7919 + i*104729) % len(obj))
				n := min(int64(len(obj))-off, int64(1+(r*31+i*17)%70000))
				got, err := backend.ReadAll(t.Context(), be, key, off, n)
				if err != nil || !bytes.Equal(got, obj[off:off+n]) {
					t.Errorf("Get(%d, %d): %d bytes, %v", off, n, len(got), err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// testAtomicVisibility: while a large object is being put, readers see
// either no object or all of it, never a part. The put starts once every
// reader has looked (and found nothing): a reader the scheduler had not yet
// run would check nothing.
func testAtomicVisibility(t *testing.T, be backend.Backend) {
	const key = "data/ab/atomic"
	obj := randomData(11, 4<<20)
	ctx := t.Context()
	var done atomic.Bool
	var wg, polling sync.WaitGroup
	for r := range 4 {
		polling.Add(1)
		wg.Go(func() {
			looked := sync.OnceFunc(polling.Done)
			defer looked()
			seen := false
			for !seen || !done.Load() {
				if ctx.Err() != nil {
					return
				}
				if r%2 == 0 {
					fi, err := be.Stat(ctx, key)
					switch {
					case errors.Is(err, backend.ErrNotFound):
					case err != nil:
						t.Errorf("Stat during Put: %v", err)
						return
					case fi.Size != int64(len(obj)):
						t.Errorf("Stat during Put: %d bytes of %d", fi.Size, len(obj))
						return
					default:
						seen = true
					}
				} else {
					got, err := backend.ReadAll(ctx, be, key, 0, -1)
					switch {
					case errors.Is(err, backend.ErrNotFound):
					case err != nil:
						t.Errorf("Get during Put: %v", err)
						return
					case !seen && !bytes.Equal(got, obj), len(got) != len(obj):
						t.Errorf("Get during Put: %d bytes of %d, or other bytes", len(got), len(obj))
						return
					default:
						seen = true
					}
				}
				looked()
				runtime.Gosched()
			}
		})
	}
	polling.Wait()
	put(t, be, key, obj)
	done.Store(true)
	wg.Wait()
}

// testContextDone: every method fails on a done context, with an error
// matching the context's error, and changes nothing.
func testContextDone(t *testing.T, be backend.Backend) {
	const present, absent = "data/ab/present", "data/ab/absent"
	want := randomData(12, 100)
	put(t, be, present, want)

	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()

	for _, c := range []struct {
		name string
		ctx  context.Context
		err  error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"expired", expired, context.DeadlineExceeded},
	} {
		ctx := c.ctx
		wantErr(t, c.name+": Put", be.Put(ctx, absent, want), c.err)
		rc, err := be.Get(ctx, present, 0, -1)
		if err == nil {
			rc.Close()
		}
		wantErr(t, c.name+": Get", err, c.err)
		_, err = be.Stat(ctx, present)
		wantErr(t, c.name+": Stat", err, c.err)
		wantErr(t, c.name+": List", be.List(ctx, "", func(backend.ObjectInfo) error { return nil }), c.err)
		wantErr(t, c.name+": Delete", be.Delete(ctx, present), c.err)
	}
	_, err := be.Stat(t.Context(), absent)
	wantErr(t, "Stat of a key put with a done context", err, backend.ErrNotFound)
	checkContent(t, be, present, want)
}

// oddKeys are legal keys with characters that need care in paths, URLs,
// query strings or XML.
func oddKeys() []string {
	return []string{
		"data/with space",
		"data/ünïcødé-ключ-鍵",
		"data/emoji-🙂",
		"data/colon:x",
		"data/percent%20x%2F",
		"data/plus+x",
		"data/tilde~x",
		"data/question?x=1",
		"data/hash#x",
		"data/amp&eq=x;semi",
		`data/quote'"x`,
		"data/star*x",
		"data/brackets[1]{2}(3)",
		"data/comma,x",
		"data/at@x$y!",
		"data/lt<gt>&amp;",
		"data/.hidden",
		"data/..dots",
		"data/trailing-dot.",
		"data/-dash",
		"data/" + strings.Repeat("long", backend.MaxKeyComponentLen/4),
		"deep/a/b/c/d/e/f/g/h/i/j/k",
	}
}

// testOddKeys: odd but legal keys round-trip through every method.
func testOddKeys(t *testing.T, be backend.Backend) {
	ctx := t.Context()
	keys := oddKeys()
	for _, key := range keys {
		put(t, be, key, []byte(key))
	}
	for _, key := range keys {
		fi, err := be.Stat(ctx, key)
		if err != nil || fi.Key != key || fi.Size != int64(len(key)) {
			t.Errorf("Stat(%q) = %q, %d bytes, %v", key, fi.Key, fi.Size, err)
		}
		checkContent(t, be, key, []byte(key))
		if got := listAll(t, ctx, be, key); len(got) != 1 || got[key].Key != key {
			t.Errorf("List(%q) = %v, want just the key", key, got)
		}
	}
	if got := listAll(t, ctx, be, ""); len(got) != len(keys) {
		t.Errorf("List: %d objects, want %d", len(got), len(keys))
	} else {
		for _, key := range keys {
			if _, ok := got[key]; !ok {
				t.Errorf("List does not list %q", key)
			}
		}
	}
	for _, key := range keys {
		if err := be.Delete(ctx, key); err != nil {
			t.Errorf("Delete(%q): %v", key, err)
		}
	}
	if got := listAll(t, ctx, be, ""); len(got) != 0 {
		t.Errorf("after deleting all: %d objects", len(got))
	}
}

// invalidKeys break backend.CheckKey.
func invalidKeys() []string {
	return []string{
		"",
		"/abs",
		"data/",
		"data//x",
		".",
		"..",
		"./x",
		"data/./x",
		"../x",
		"data/../x",
		"data/..",
		`data\x`,
		"data/" + backend.TempPrefix + "x",
		"data/nul\x00",
		"data/newline\n",
		"data/del\x7f",
		"data/\xff\xfe",
		"data/" + strings.Repeat("x", backend.MaxKeyComponentLen+1),
		strings.Repeat("abcdefg/", backend.MaxKeyLen/8) + "x",
	}
}

// testInvalidKeys: every method refuses invalid keys with ErrInvalidKey and
// stores nothing.
func testInvalidKeys(t *testing.T, be backend.Backend) {
	ctx := t.Context()
	for _, key := range invalidKeys() {
		wantErr(t, fmt.Sprintf("Put(%q)", key), be.Put(ctx, key, []byte("x")), backend.ErrInvalidKey)
		_, err := be.Get(ctx, key, 0, -1)
		wantErr(t, fmt.Sprintf("Get(%q)", key), err, backend.ErrInvalidKey)
		_, err = be.Stat(ctx, key)
		wantErr(t, fmt.Sprintf("Stat(%q)", key), err, backend.ErrInvalidKey)
		wantErr(t, fmt.Sprintf("Delete(%q)", key), be.Delete(ctx, key), backend.ErrInvalidKey)
	}
	if got := listAll(t, ctx, be, ""); len(got) != 0 {
		t.Errorf("after refused Puts: %d objects", len(got))
	}
}
