// Package freelist keeps large byte buffers for reuse for as long as their
// owner lives.
//
// A sync.Pool is emptied by every garbage collection, and a buffer made
// again afterwards costs the kernel a page fault for each page it touches.
// The data path's buffers are large (chunks up to 8 MiB, packs of 16–24
// MiB) and a GC comes every few hundred megabytes, so with a pool an
// export of 4 GiB faulted in its buffers again and again; in a guest where
// faults are expensive (paravirtualised page tables) that was most of the
// export's system time (issue 15). A List keeps what it is given, up to
// its bound, until Drop.
package freelist

import "sync"

// DefaultMax is the bound of a List whose Max is zero.
const DefaultMax = 16

// List is a bounded free list of byte buffers. It never holds more than
// Max buffers, so it keeps no more than were once out at the same time
// (each was made while the list was empty) and at most Max of them. The
// zero value is ready to use. Safe for concurrent use.
type List struct {
	// Max bounds the buffers kept (DefaultMax if zero). Set it before
	// the first Put.
	Max int

	mu   sync.Mutex
	free [][]byte
}

// Get returns an empty buffer (length 0) of capacity at least want, or nil
// if the list has none; the caller then makes one. Smaller buffers met on
// the way are dropped: the size the owner asks for changed.
func (l *List) Get(want int) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	for n := len(l.free); n > 0; n = len(l.free) {
		b := l.free[n-1]
		l.free[n-1] = nil
		l.free = l.free[:n-1]
		if cap(b) >= want {
			return b[:0]
		}
	}
	return nil
}

// Put keeps b for a later Get, unless the list is full. The caller must
// not use b afterwards.
func (l *List) Put(b []byte) {
	if cap(b) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) < l.max() {
		l.free = append(l.free, b[:0])
	}
}

// Drop empties the list, for the garbage collector to take the buffers.
func (l *List) Drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.free)
	l.free = nil
}

func (l *List) max() int {
	if l.Max > 0 {
		return l.Max
	}
	return DefaultMax
}
