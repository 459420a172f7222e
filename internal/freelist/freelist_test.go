package freelist

import (
	"runtime"
	"sync"
	"testing"
)

// TestKeptAcrossGC: a buffer put back is handed out again after garbage
// collections (a sync.Pool drops it), empty, once.
func TestKeptAcrossGC(t *testing.T) {
	var l List
	b := make([]byte, 100, 1<<20)
	l.Put(b)
	runtime.GC()
	runtime.GC()
	got := l.Get(1 << 20)
	if got == nil || len(got) != 0 || cap(got) != 1<<20 || &got[:1][0] != &b[:1][0] {
		t.Fatalf("Get after GC = len %d cap %d, want the buffer put, empty", len(got), cap(got))
	}
	if again := l.Get(1); again != nil {
		t.Fatalf("second Get = cap %d, want nil: the list held one buffer", cap(again))
	}
}

func TestBounds(t *testing.T) {
	tests := []struct {
		name string
		max  int
		puts int
		want int
	}{
		{"default", 0, DefaultMax + 5, DefaultMax},
		{"set", 3, 10, 3},
		{"under", 8, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := List{Max: tt.max}
			for range tt.puts {
				l.Put(make([]byte, 0, 4096))
			}
			l.Put(nil) // no capacity: not kept
			if n := l.len(); n != tt.want {
				t.Fatalf("Len after %d puts = %d, want %d", tt.puts, n, tt.want)
			}
			if b := l.Get(8192); b != nil {
				t.Fatalf("Get(8192) = cap %d from 4 KiB buffers, want nil", cap(b))
			}
			if n := l.len(); n != 0 {
				t.Fatalf("buffers too small for Get are dropped: %d left", n)
			}
			l.Put(make([]byte, 0, 4096))
			l.Drop()
			if b := l.Get(1); b != nil {
				t.Fatalf("Get after Drop = cap %d, want nil", cap(b))
			}
		})
	}
}

// TestConcurrent: no buffer is handed to two users at once (run with -race).
func TestConcurrent(t *testing.T) {
	l := List{Max: 4}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				b := l.Get(64)
				if b == nil {
					b = make([]byte, 0, 64)
				}
				b = append(b, byte(g), byte(i))
				if b[0] != byte(g) || len(b) != 2 {
					t.Errorf("buffer shared: %v", b)
					return
				}
				l.Put(b)
			}
		})
	}
	wg.Wait()
	if n := l.len(); n > 4 {
		t.Fatalf("Len = %d, want at most 4", n)
	}
}

// len is the number of buffers kept.
func (l *List) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.free)
}
