package hugemem

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Alloc returns a zeroed buffer of length n whose first byte is aligned to
// PageSize and whose capacity is n rounded up to PageSize, in a mapping of
// its own. Only Free releases it; the garbage collector never does. It is
// safe for concurrent use.
func Alloc(n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("hugemem: allocating %d bytes", n)
	}
	size := roundUp(n)
	// Map a huge page more than asked, to cut an aligned buffer out of
	// it, and unmap the ends around it.
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(size+PageSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("hugemem: mapping %d bytes: %w", size, err)
	}
	head := int(-uintptr(p) & (PageSize - 1)) // bytes up to the first aligned one
	if head > 0 {
		if err := unix.MunmapPtr(p, uintptr(head)); err != nil {
			return nil, fmt.Errorf("hugemem: trimming a mapping: %w", err)
		}
	}
	if tail := PageSize - head; tail > 0 {
		if err := unix.MunmapPtr(unsafe.Add(p, head+size), uintptr(tail)); err != nil {
			return nil, fmt.Errorf("hugemem: trimming a mapping: %w", err)
		}
	}
	b := unsafe.Slice((*byte)(unsafe.Add(p, head)), size)
	// Advice: without transparent huge pages (EINVAL), the buffer has
	// ordinary pages and works the same.
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	return b[:n], nil
}

// Free unmaps b, a buffer that Alloc returned, resliced or not, as long
// as it starts at the same byte with the same capacity (b[:k] does;
// b[1:] and b[:k:k] do not). Neither b nor any slice of it may be used
// afterwards. Freeing nil does nothing.
func Free(b []byte) error {
	if cap(b) == 0 {
		return nil
	}
	addr := unsafe.Pointer(unsafe.SliceData(b))
	if uintptr(addr)%PageSize != 0 || cap(b)%PageSize != 0 {
		return fmt.Errorf("hugemem: freeing %d bytes at %p, not a buffer as Alloc returned it", cap(b), addr)
	}
	if err := unix.MunmapPtr(addr, uintptr(cap(b))); err != nil {
		return fmt.Errorf("hugemem: unmapping: %w", err)
	}
	return nil
}
