package repo

import (
	"runtime"
	"testing"
)

// TestPackBuffersSurviveGC: a released pack buffer is handed out again
// after garbage collections (a sync.Pool would have dropped it), the list
// never holds more than maxFreePacks, a buffer too small for the request
// is not returned, and drop empties the list.
func TestPackBuffersSurviveGC(t *testing.T) {
	var l packBuffers
	b := make([]byte, 100, 1<<20)
	l.put(b)
	runtime.GC()
	runtime.GC()
	got := l.get(1 << 20)
	if got == nil || cap(got) != 1<<20 || len(got) != 0 || &got[:1][0] != &b[:1][0] {
		t.Fatalf("get after GC = len %d cap %d, want the released buffer, empty", len(got), cap(got))
	}
	if again := l.get(1); again != nil {
		t.Fatalf("second get = cap %d, want nil (the list held one buffer)", cap(again))
	}

	for range maxFreePacks + 5 {
		l.put(make([]byte, 0, 4096))
	}
	if n := len(l.free); n != maxFreePacks {
		t.Fatalf("list holds %d buffers after %d puts, want at most %d", n, maxFreePacks+5, maxFreePacks)
	}
	if b := l.get(8192); b != nil {
		t.Fatalf("get(8192) = cap %d from a list of 4 KiB buffers, want nil", cap(b))
	}
	if n := len(l.free); n != 0 {
		t.Fatalf("too small buffers are dropped by get: %d left", n)
	}

	l.put(make([]byte, 0, 4096))
	l.drop()
	if b := l.get(1); b != nil {
		t.Fatalf("get after drop = cap %d, want nil", cap(b))
	}
}

// TestReleasePackReuses: an exported pack's buffer backs the next pack.
func TestReleasePackReuses(t *testing.T) {
	r, _ := newTestRepo(t)
	want := r.packBuffer(1 << 20)
	p := &Pack{Data: append(want, 1, 2, 3)}
	r.ReleasePack(p)
	if p.Data != nil {
		t.Fatal("ReleasePack left p.Data set")
	}
	got := r.packBuffer(1 << 20)
	if cap(got) != cap(want) || &got[:1][0] != &want[:1][0] {
		t.Fatal("the next pack buffer is not the released one")
	}
}
