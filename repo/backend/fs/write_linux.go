package fs

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directMin is the smallest object written around the page cache: packs
// are, index files and snapshots mostly are not.
const directMin = 1 << 20

// writeData writes data to the new, empty file f and returns how many of
// its bytes went around the page cache.
//
// An object of at least directMin bytes whose memory is aligned is written
// with O_DIRECT, up to its last aligned block, straight from data to the
// storage; the tail goes through the page cache. Copying a pack into the
// page cache costs more CPU than anything else the fs backend does (on
// ext4 in this project's virtual machine, more than BLAKE3 on the same
// bytes: BENCHMARKS.md, "Export CPU per GiB"), and fills memory with pages
// that count against a pod's memory limit, like the source pages the
// export drops. Durability is the same: the caller fsyncs either way. A
// later read of the object comes from the storage. File systems that keep
// data in memory (tmpfs), have no direct I/O, or refuse it for this file,
// get an ordinary write.
func writeData(f *os.File, data []byte) (direct int, err error) {
	if len(data) < directMin {
		_, err := f.Write(data)
		return 0, err
	}
	al := directAlign(f)
	if al == 0 || addrOf(data)%al != 0 {
		_, err := f.Write(data)
		return 0, err
	}
	fd := uintptr(f.Fd())
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		_, err := f.Write(data)
		return 0, err
	}
	if _, err := unix.FcntlInt(fd, unix.F_SETFL, flags|unix.O_DIRECT); err == nil {
		var werr error
		direct, werr = f.Write(data[:len(data)/al*al])
		if _, err := unix.FcntlInt(fd, unix.F_SETFL, flags); err != nil {
			return direct, err
		}
		// EINVAL: the file system took the flag but not this write; what
		// was written stays, the rest goes through the page cache.
		if werr != nil && !errors.Is(werr, unix.EINVAL) {
			return direct, werr
		}
	}
	_, err = f.Write(data[direct:])
	return direct, err
}

// directAlign returns the alignment of direct I/O on f's file system
// (offset, length and memory, at least a page), or 0 if f should not be
// written with O_DIRECT.
func directAlign(f *os.File) int {
	fd := int(f.Fd())
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC {
		return 0
	}
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx); err != nil ||
		stx.Mask&unix.STATX_DIOALIGN == 0 || stx.Dio_offset_align == 0 {
		return 0
	}
	al := max(os.Getpagesize(), int(stx.Dio_offset_align), int(stx.Dio_mem_align))
	if al&(al-1) != 0 {
		return 0
	}
	return al
}

// addrOf is the address of b's first byte, for alignment.
func addrOf(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	return int(uintptr(unsafe.Pointer(&b[0])))
}
