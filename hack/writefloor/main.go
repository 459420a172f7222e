// Command writefloor measures the physical floor of a restore onto a
// filesystem: how long writing the data of an image (its extents, found
// with SEEK_DATA/SEEK_HOLE; holes stay holes) onto a new file beside the
// target takes, up to a durable fdatasync, with nothing to decode. The
// data is read into memory first and not timed, so the figure is the
// storage's, not the source's.
//
//	go run ./hack/writefloor -image IMG -out DIR/floor.tmp [-mode direct|buffered|mapped] [-bs 16MiB] [-writers 1]
//
// direct: O_DIRECT writes of bs bytes (as dd oflag=direct), then
// fdatasync; buffered: the same writes through the page cache, then
// fdatasync; mapped: each piece of bs bytes copied into a shared mapping
// of its pages (mmap, MADV_POPULATE_WRITE, copy, munmap), then fdatasync:
// how a writer would escape the inode lock that serialises buffered
// writes to one file on tmpfs. writers goroutines take the pieces in
// turn. It prints one line: the mode, the data bytes, the seconds to the
// end of the writes and to the end of the fdatasync, MB/s, and the
// process's CPU seconds. The output file is removed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/blockmover/blockmover/internal/units"
)

type extent struct{ off, n int64 }

func main() {
	image := flag.String("image", "", "the image whose data extents are written (required)")
	out := flag.String("out", "", "the file to write, created new and removed at the end (required)")
	mode := flag.String("mode", "direct", "direct (O_DIRECT), buffered (page cache) or mapped (shared mappings)")
	bs := flag.String("bs", "16MiB", "size of each write")
	writers := flag.Int("writers", 1, "goroutines writing at once")
	flag.Parse()
	if err := run(*image, *out, *mode, *bs, *writers); err != nil {
		fmt.Fprintln(os.Stderr, "writefloor:", err)
		os.Exit(1)
	}
}

func run(image, out, mode, bsFlag string, writers int) error {
	if image == "" || out == "" {
		return errors.New("-image and -out are required")
	}
	if mode != "direct" && mode != "buffered" && mode != "mapped" {
		return fmt.Errorf("-mode %q: want direct, buffered or mapped", mode)
	}
	if writers < 1 {
		return fmt.Errorf("-writers %d: want at least 1", writers)
	}
	bs, err := units.ParseSize(bsFlag)
	if err != nil || bs <= 0 || bs%4096 != 0 {
		return fmt.Errorf("-bs %q: want a positive multiple of 4 KiB", bsFlag)
	}
	exts, size, data, err := load(image)
	if err != nil {
		return err
	}
	pieces, err := split(exts, data, bs, mode == "direct")
	if err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if mode == "mapped" {
		flags = os.O_RDWR | os.O_CREATE | os.O_EXCL // mmap needs read access
	}
	if mode == "direct" {
		flags |= unix.O_DIRECT
	}
	var ru0, ru1 unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru0); err != nil {
		return err
	}
	start := time.Now()
	f, err := os.OpenFile(out, flags, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(out)
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	if err := writeAll(f, pieces, mode, writers); err != nil {
		return err
	}
	written := time.Since(start)
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return err
	}
	total := time.Since(start)
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru1); err != nil {
		return err
	}
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	if writers > 1 {
		mode = fmt.Sprintf("%s (%d writers)", mode, writers)
	}
	fmt.Printf("%s %d bytes in %d extents: writes %.2f s, +fdatasync %.2f s, %.0f MB/s, CPU %.2f s\n",
		mode, len(data), len(exts), written.Seconds(), total.Seconds(), float64(len(data))/total.Seconds()/1e6, cpu.Seconds())
	return nil
}

// piece is one write: data at off.
type piece struct {
	data []byte
	off  int64
}

// split cuts the extents, whose bytes lie one after the other in data,
// into writes of at most bs bytes; direct ones must end aligned.
func split(exts []extent, data []byte, bs int64, direct bool) ([]piece, error) {
	var pieces []piece
	var p int64
	for _, x := range exts {
		for w := int64(0); w < x.n; w += bs {
			n := min(bs, x.n-w)
			if direct && n%4096 != 0 {
				return nil, fmt.Errorf("extent at %d ends unaligned: direct writes need 4 KiB alignment", x.off)
			}
			pieces = append(pieces, piece{data: data[p+w : p+w+n], off: x.off + w})
		}
		p += x.n
	}
	return pieces, nil
}

// writeAll writes the pieces onto f from writers goroutines, which take
// them in turn.
func writeAll(f *os.File, pieces []piece, mode string, writers int) error {
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for k := range writers {
		wg.Go(func() {
			for i := k; i < len(pieces) && errs[k] == nil; i += writers {
				if mode == "mapped" {
					errs[k] = writeMapped(f, pieces[i].data, pieces[i].off)
				} else {
					_, errs[k] = f.WriteAt(pieces[i].data, pieces[i].off)
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeMapped copies p to off through a shared mapping of the pages it
// covers, allocated first with MADV_POPULATE_WRITE (so that a full
// filesystem is an error, not a SIGBUS).
func writeMapped(f *os.File, p []byte, off int64) error {
	start := off &^ 4095
	mem, err := unix.Mmap(int(f.Fd()), start, int(off+int64(len(p))-start), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping at %d: %w", off, err)
	}
	if err := unix.Madvise(mem, unix.MADV_POPULATE_WRITE); err != nil {
		_ = unix.Munmap(mem)
		return fmt.Errorf("populating at %d: %w", off, err)
	}
	copy(mem[off-start:], p)
	return unix.Munmap(mem)
}

// load returns the data extents of image, its size, and its data read into
// page-aligned memory, extent after extent.
func load(image string) ([]extent, int64, []byte, error) {
	f, err := os.Open(image)
	if err != nil {
		return nil, 0, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, nil, err
	}
	size := fi.Size()
	var exts []extent
	var total int64
	for off := int64(0); off < size; {
		s, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil, 0, nil, fmt.Errorf("%s: SEEK_DATA: %w", image, err)
		}
		e, err := unix.Seek(int(f.Fd()), s, unix.SEEK_HOLE)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("%s: SEEK_HOLE: %w", image, err)
		}
		exts = append(exts, extent{s, e - s})
		total += e - s
		off = e
	}
	raw := make([]byte, total+4096)
	a := int((4096 - uintptr(unsafe.Pointer(&raw[0]))%4096) % 4096)
	data := raw[a : a+int(total)]
	var p int64
	for _, x := range exts {
		if _, err := f.ReadAt(data[p:p+x.n], x.off); err != nil {
			return nil, 0, nil, err
		}
		p += x.n
	}
	return exts, size, data, nil
}
