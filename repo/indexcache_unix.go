//go:build unix

package repo

import (
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// cacheMap is a cache file mapped into memory, private and copy-on-write:
// nothing is ever written to it, and its pages are read from the file as
// lookups touch them. It is unmapped once nothing refers to it.
type cacheMap struct {
	data []byte
}

func mapCache(f *os.File, size int) (*cacheMap, error) {
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	m := &cacheMap{data: data}
	runtime.AddCleanup(m, func(b []byte) { syscall.Munmap(b) }, data)
	return m, nil
}

// close unmaps the file at once; nothing may use it afterwards.
func (m *cacheMap) close() {
	if m.data != nil {
		syscall.Munmap(m.data)
		m.data = nil
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
	syscall.Madvise(m.data[start-base:end-base], syscall.MADV_DONTNEED)
}
