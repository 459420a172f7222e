package repo

import (
	"runtime"
	"testing"
)

// TestReleasePackReuses: a saved pack's buffer backs the next pack, also
// after garbage collections (a sync.Pool would have dropped it).
func TestReleasePackReuses(t *testing.T) {
	r, _ := newTestRepo(t)
	want := r.packBuffer(1 << 20)
	p := &Pack{Data: append(want, 1, 2, 3)}
	r.ReleasePack(p)
	if p.Data != nil {
		t.Fatal("ReleasePack left p.Data set")
	}
	runtime.GC()
	runtime.GC()
	got := r.packBuffer(1 << 20)
	if len(got) != 0 || cap(got) != cap(want) || &got[:1][0] != &want[:1][0] {
		t.Fatal("the next pack buffer is not the released one")
	}
}
