//go:build !linux

package hugemem

import "fmt"

// Alloc returns a zeroed buffer of length n and capacity n rounded up to
// PageSize, from the Go heap: without Linux's transparent huge pages
// there is nothing to map for.
func Alloc(n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("hugemem: allocating %d bytes", n)
	}
	return make([]byte, n, roundUp(n)), nil
}

// Free does nothing: the garbage collector frees what Alloc returned.
func Free(b []byte) error { return nil }
