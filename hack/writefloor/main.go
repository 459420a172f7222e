// Command writefloor measures the physical floor of a restore onto a
// filesystem: how long writing the data of an image (its extents, found
// with SEEK_DATA/SEEK_HOLE; holes stay holes) onto a new file beside the
// target takes, up to a durable fdatasync, with nothing to decode. The
// data is read into memory first and not timed, so the figure is the
// storage's, not the source's.
//
//	go run ./hack/writefloor -image IMG -out DIR/floor.tmp [-mode direct|buffered] [-bs 16MiB]
//
// direct: O_DIRECT writes of bs bytes (as dd oflag=direct), then
// fdatasync; buffered: the same writes through the page cache, then
// fdatasync. It prints one line: the mode, the data bytes, the seconds to
// the end of the writes and to the end of the fdatasync, MB/s, and the
// process's CPU seconds. The output file is removed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/blockmover/blockmover/internal/units"
)

type extent struct{ off, n int64 }

func main() {
	image := flag.String("image", "", "the image whose data extents are written (required)")
	out := flag.String("out", "", "the file to write, created new and removed at the end (required)")
	mode := flag.String("mode", "direct", "direct (O_DIRECT) or buffered (page cache)")
	bs := flag.String("bs", "16MiB", "size of each write")
	flag.Parse()
	if err := run(*image, *out, *mode, *bs); err != nil {
		fmt.Fprintln(os.Stderr, "writefloor:", err)
		os.Exit(1)
	}
}

func run(image, out, mode, bsFlag string) error {
	if image == "" || out == "" {
		return errors.New("-image and -out are required")
	}
	if mode != "direct" && mode != "buffered" {
		return fmt.Errorf("-mode %q: want direct or buffered", mode)
	}
	bs, err := units.ParseSize(bsFlag)
	if err != nil || bs <= 0 || bs%4096 != 0 {
		return fmt.Errorf("-bs %q: want a positive multiple of 4 KiB", bsFlag)
	}
	exts, size, data, err := load(image)
	if err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
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
	var p int64
	for _, x := range exts {
		for w := int64(0); w < x.n; w += bs {
			n := min(bs, x.n-w)
			if mode == "direct" && n%4096 != 0 {
				return fmt.Errorf("extent at %d ends unaligned: direct writes need 4 KiB alignment", x.off)
			}
			if _, err := f.WriteAt(data[p+w:p+w+n], x.off+w); err != nil {
				return err
			}
		}
		p += x.n
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
	fmt.Printf("%s %d bytes in %d extents: writes %.2f s, +fdatasync %.2f s, %.0f MB/s, CPU %.2f s\n",
		mode, len(data), len(exts), written.Seconds(), total.Seconds(), float64(len(data))/total.Seconds()/1e6, cpu.Seconds())
	return nil
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
