package mover

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Source is a volume to export. ReadAt may be called from several
// goroutines at once and must not retain p (the io.ReaderAt contract). A
// Source that also implements chunk.Sparse is never read where it reports
// zeros.
type Source interface {
	io.ReaderAt
	Size() int64
}

// Device is a block device or a regular file opened as a Source or a
// Target. Its methods are safe for concurrent use.
type Device struct {
	f        *os.File
	path     string
	size     int64
	isDevice bool
	// dropCache: after each read, tell the kernel the pages will not be
	// needed (POSIX_FADV_DONTNEED), so that exporting a multi-TiB volume
	// does not fill the page cache, which counts against a pod's memory
	// limit.
	dropCache bool
	fresh     bool // a target file created or emptied by OpenTarget
	readBytes atomic.Int64
}

// ErrNotVolume: the path is neither a block device nor a regular file.
var ErrNotVolume = errors.New("not a block device or regular file")

// OpenSource opens path read-only for export. The size of a block device
// comes from BLKGETSIZE64. With dropCache, pages read are dropped from the
// page cache afterwards.
func OpenSource(path string, dropCache bool) (*Device, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening source: %w", err)
	}
	d := &Device{f: f, path: path, dropCache: dropCache}
	if err := d.stat(); err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func (d *Device) stat() error {
	fi, err := d.f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", d.path, err)
	}
	switch {
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		d.isDevice = true
		var size uint64
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
		if errno != 0 {
			err := error(errno)
			return fmt.Errorf("%s: reading device size: %w", d.path, err)
		}
		d.size = int64(size)
	case fi.Mode().IsRegular():
		d.size = fi.Size()
	default:
		return fmt.Errorf("%s: %w", d.path, ErrNotVolume)
	}
	return nil
}

// Path returns the path the device was opened with.
func (d *Device) Path() string { return d.path }

// Size returns the size in bytes found at open.
func (d *Device) Size() int64 { return d.size }

// IsBlockDevice reports whether the device is a block device (not a file).
func (d *Device) IsBlockDevice() bool { return d.isDevice }

// ReadBytes returns how many bytes ReadAt has read.
func (d *Device) ReadBytes() int64 { return d.readBytes.Load() }

// ReadAt reads like os.File.ReadAt.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.f.ReadAt(p, off)
	d.readBytes.Add(int64(n))
	if d.dropCache && n > 0 {
		// Advice only: failure changes nothing but memory use.
		_ = unix.Fadvise(int(d.f.Fd()), off, int64(n), unix.FADV_DONTNEED)
	}
	return n, err
}

// NextData implements chunk.Sparse with SEEK_DATA and SEEK_HOLE on regular
// files, so holes are never read. A block device reports everything as
// data.
func (d *Device) NextData(off int64) (start, end int64, err error) {
	if d.isDevice || off >= d.size {
		if off >= d.size {
			return d.size, d.size, nil
		}
		return off, d.size, nil
	}
	fd := int(d.f.Fd())
	start, err = unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return d.size, d.size, nil // only a hole up to the end
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return off, d.size, nil // the filesystem cannot tell: all data
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s: SEEK_DATA: %w", d.path, err)
	}
	end, err = unix.Seek(fd, start, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: SEEK_HOLE: %w", d.path, err)
	}
	return min(start, d.size), min(end, d.size), nil
}

// CheckUnchanged fails if the device's size differs from the size at open:
// a volume that was resized during an export cannot give a consistent
// snapshot.
func (d *Device) CheckUnchanged() error {
	old := d.size
	if err := d.stat(); err != nil {
		return err
	}
	if d.size != old {
		return fmt.Errorf("%s changed size during the export (%d → %d bytes)", d.path, old, d.size)
	}
	return nil
}

// Close closes the device.
func (d *Device) Close() error { return d.f.Close() }

// MountedAt returns the mount point if the block device (or, for a file,
// nothing) is mounted according to /proc/self/mountinfo: exporting a
// mounted filesystem gives a crash-consistent image at best.
func (d *Device) MountedAt() string {
	if !d.isDevice {
		return ""
	}
	var st unix.Stat_t
	if unix.Fstat(int(d.f.Fd()), &st) != nil {
		return ""
	}
	want := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[2] == want {
			return fields[4]
		}
	}
	return ""
}

// TargetOptions choose how a target is opened.
type TargetOptions struct {
	// Create a regular file if the path does not exist.
	Create bool
}

// OpenTarget opens path for import of a volume of size bytes. A block
// device is opened exclusively (O_EXCL: the kernel refuses while it is
// mounted or opened exclusively elsewhere) and must hold at least size
// bytes. A regular file is created if asked, and truncated to size; a file
// that was empty or new is known to read as zeros.
func OpenTarget(path string, size int64, opts TargetOptions) (*Device, error) {
	flags := os.O_RDWR | unix.O_CLOEXEC
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		flags |= os.O_EXCL
	case err == nil && fi.Mode().IsRegular():
	case err == nil:
		return nil, fmt.Errorf("%s: %w", path, ErrNotVolume)
	case errors.Is(err, os.ErrNotExist) && opts.Create:
		flags |= os.O_CREATE | os.O_EXCL
	default:
		return nil, fmt.Errorf("opening target: %w", err)
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening target %s: %w", path, err)
	}
	d := &Device{f: f, path: path}
	if err := d.stat(); err != nil {
		f.Close()
		return nil, err
	}
	if d.isDevice {
		if d.size < size {
			f.Close()
			return nil, fmt.Errorf("target %s holds %d bytes, the snapshot needs %d", path, d.size, size)
		}
		return d, nil
	}
	d.fresh = d.size == 0
	if d.size != size {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, fmt.Errorf("sizing target %s: %w", path, err)
		}
		d.size = size
	}
	return d, nil
}

// Fresh reports whether the target is a file that OpenTarget created or
// found empty, so every byte already reads as zero.
func (d *Device) Fresh() bool { return d.fresh }

// WriteAt writes like os.File.WriteAt; calls on ranges that do not overlap
// may run in parallel.
func (d *Device) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }

// Zero makes [off, off+n) read as zeros: a punched hole in a file,
// BLKZEROOUT on a block device (fast on thin storage), and written zeros
// where neither works.
func (d *Device) Zero(off, n int64) error {
	if n <= 0 {
		return nil
	}
	fd := int(d.f.Fd())
	if !d.isDevice {
		err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("%s: punching hole at %d+%d: %w", d.path, off, n, err)
		}
		return d.writeZeros(off, n)
	}
	// BLKZEROOUT needs 512-byte alignment; write the unaligned edges.
	s, e := (off+511)/512*512, (off+n)/512*512
	if e > s {
		rng := [2]uint64{uint64(s), uint64(e - s)}
		if err := ioctlRange(fd, unix.BLKZEROOUT, &rng); err != nil {
			return d.writeZeros(off, n)
		}
		if err := d.writeZeros(off, s-off); err != nil {
			return err
		}
		return d.writeZeros(e, off+n-e)
	}
	return d.writeZeros(off, n)
}

func (d *Device) writeZeros(off, n int64) error {
	if n <= 0 {
		return nil
	}
	z := make([]byte, min(n, 1<<20))
	for n > 0 {
		w := min(n, int64(len(z)))
		if _, err := d.f.WriteAt(z[:w], off); err != nil {
			return fmt.Errorf("%s: writing zeros at %d: %w", d.path, off, err)
		}
		off += w
		n -= w
	}
	return nil
}

// StartWriteback starts writing the target's dirty pages to its storage
// without waiting for them (sync_file_range SYNC_FILE_RANGE_WRITE on the
// whole file or device), so that the disk works while an import still
// writes, and the final Sync has less left to do. It changes no data and
// promises no durability; an error only means the kernel would not start.
func (d *Device) StartWriteback() error {
	if err := unix.SyncFileRange(int(d.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		return fmt.Errorf("%s: sync_file_range: %w", d.path, err)
	}
	return nil
}

// DirectFile writes a target around the page cache (O_DIRECT): the data
// goes from the caller's memory to the storage, with no copy into the
// kernel and no dirty pages left for Sync to write. Every WriteAt must be
// aligned to Align: its offset, its length and the address of p. It is
// safe for concurrent use on ranges that do not overlap.
type DirectFile struct {
	f     *os.File
	path  string
	align int64
}

// Align is the alignment every WriteAt must keep: a power of two, at
// least the page size.
func (w *DirectFile) Align() int64 { return w.align }

// WriteAt writes p at off, both aligned to Align.
func (w *DirectFile) WriteAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if a := w.align; off%a != 0 || int64(len(p))%a != 0 || int64(uintptr(unsafe.Pointer(&p[0])))%a != 0 {
		return 0, fmt.Errorf("%s: direct write of %d bytes at %d is not aligned to %d", w.path, len(p), off, a)
	}
	n, err := w.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("%s: direct write at %d: %w", w.path, off, err)
	}
	return n, nil
}

// Close closes the direct descriptor (the Device stays open).
func (w *DirectFile) Close() error { return w.f.Close() }

// ErrNoDirect: the target cannot be written around the page cache.
var ErrNoDirect = errors.New("direct I/O not supported")

// OpenDirect opens the target a second time with O_DIRECT for writing,
// beside the Device's own descriptor, which stays for everything that
// cannot be aligned (the unaligned tail of a volume, writes that are
// given up on assembling). Writes through either are made durable by the
// Device's Sync (fdatasync covers the inode, whichever descriptor wrote).
// A file on tmpfs (memory: direct I/O would still copy into it) or on a
// filesystem without direct I/O gives an error wrapping ErrNoDirect.
//
// The alignment is the larger of the target's direct-I/O alignments
// (statx STATX_DIOALIGN; for a block device without it, the logical block
// size) and the page size: aligned to the filesystem block, ext4 takes no
// sub-block path that serialises direct writes.
func (d *Device) OpenDirect() (*DirectFile, error) {
	fd := int(d.f.Fd())
	if !d.isDevice {
		var fs unix.Statfs_t
		if err := unix.Fstatfs(fd, &fs); err != nil {
			return nil, fmt.Errorf("%s: statfs: %w", d.path, err)
		}
		if fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC {
			return nil, fmt.Errorf("%s is in memory (tmpfs): %w", d.path, ErrNoDirect)
		}
	}
	align := int64(os.Getpagesize())
	var stx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx)
	switch {
	case err == nil && stx.Mask&unix.STATX_DIOALIGN != 0:
		if stx.Dio_offset_align == 0 {
			return nil, fmt.Errorf("%s: %w", d.path, ErrNoDirect)
		}
		align = max(align, int64(stx.Dio_offset_align), int64(stx.Dio_mem_align))
	case d.isDevice:
		ss, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
		if err != nil {
			return nil, fmt.Errorf("%s: logical block size: %w", d.path, err)
		}
		align = max(align, int64(ss))
	default:
		return nil, fmt.Errorf("%s: no direct-I/O alignment: %w", d.path, ErrNoDirect)
	}
	if align&(align-1) != 0 {
		return nil, fmt.Errorf("%s: direct-I/O alignment %d is not a power of two: %w", d.path, align, ErrNoDirect)
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("%s: %w", d.path, ErrNoDirect)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: opening for direct I/O: %w", d.path, err)
	}
	return &DirectFile{f: f, path: d.path, align: align}, nil
}

// Sync flushes written data to stable storage (fdatasync).
func (d *Device) Sync() error {
	if err := unix.Fdatasync(int(d.f.Fd())); err != nil {
		return fmt.Errorf("%s: fdatasync: %w", d.path, err)
	}
	return nil
}

// ioctlRange issues an ioctl whose argument is a {start, length} pair.
func ioctlRange(fd int, req uint, rng *[2]uint64) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(rng)))
	if errno != 0 {
		return errno
	}
	return nil
}
