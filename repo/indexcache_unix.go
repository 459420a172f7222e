//go:build unix

package repo

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cacheMap is a cache file mapped into memory, private and copy-on-write:
// nothing is ever written to it, and its pages are read from the file as
// lookups touch them. It is unmapped once nothing refers to it.
type cacheMap struct {
	data []byte
}

func mapCache(f *os.File, size int) (*cacheMap, error) {
	data, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	// Lookups touch a few entries here and there: no read-ahead.
	unix.Madvise(data, unix.MADV_RANDOM)
	m := &cacheMap{data: data}
	runtime.AddCleanup(m, func(b []byte) { unix.Munmap(b) }, data)
	return m, nil
}

// close unmaps the file at once; nothing may use it afterwards.
func (m *cacheMap) close() {
	if m.data != nil {
		unix.Munmap(m.data)
		m.data = nil
	}
}

// releaseAll unmaps every page of the file from this process (they stay
// in the page cache): a read fault maps the pages around it too (64 KiB
// on Linux, whatever the advice), so lookups leave far more of the file
// resident than they read. Nothing is lost: the mapping is never written.
func (m *cacheMap) releaseAll() {
	if m != nil && len(m.data) > 0 {
		unix.Madvise(m.data, unix.MADV_DONTNEED)
	}
}

// release lets the kernel drop the pages that hold block (read, never
// written), so that a pass over every entry does not leave them all
// resident; they are read from the file again if touched.
func (m *cacheMap) release(block []indexEntry) {
	if len(block) == 0 {
		return
	}
	start := uintptr(unsafe.Pointer(&block[0]))
	end := start + uintptr(len(block)*entrySize)
	base := uintptr(unsafe.Pointer(&m.data[0]))
	page := uintptr(os.Getpagesize())
	start = (start + page - 1) &^ (page - 1)
	end &^= page - 1
	if start < base || end <= start || end > base+uintptr(len(m.data)) {
		return
	}
	unix.Madvise(m.data[start-base:end-base], unix.MADV_DONTNEED)
}
