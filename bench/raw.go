package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// RawOptions tune the measurement of the storage's raw sequential speed.
type RawOptions struct {
	Skip bool
	// Size is how many bytes each test reads or writes (default 1 GiB on
	// a device, 512 MiB in a file, at most the scenario's size).
	Size int64
	// BlockSize of each I/O (default 1 MiB).
	BlockSize int
	// QueueDepths: I/Os in flight (default 1, 4, 16).
	QueueDepths []int
	// MaxSeconds bounds each test (default 10).
	MaxSeconds float64
}

// RawReport is the raw sequential speed of the storage a benchmark runs on,
// read and written with O_DIRECT (no page cache) at several queue depths,
// so that the figures of the runs can be set against what the storage
// can do.
type RawReport struct {
	Path      string     `json:"path"`
	Kind      string     `json:"kind"`
	BlockSize int        `json:"block_size"`
	Points    []RawPoint `json:"points,omitempty"`
	Note      string     `json:"note,omitempty"`
}

// RawPoint is one test: sequential reads or writes at one queue depth.
type RawPoint struct {
	Mode       string  `json:"mode"` // read or write
	QueueDepth int     `json:"queue_depth"`
	Bytes      int64   `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	MBps       float64 `json:"mb_per_s"`
}

func (r *runner) measureRaw(ctx context.Context) {
	o := r.cfg.Raw
	dev := r.cfg.Device != ""
	path := r.cfg.Device
	kind := "block device"
	def := int64(1 << 30)
	if !dev {
		path = filepath.Join(r.cfg.Work, "raw-test.bin")
		kind = "file on " + fsType(r.cfg.Work)
		def = 512 << 20
	}
	if o.Size <= 0 {
		o.Size = min(def, r.base.Size())
	}
	if o.BlockSize <= 0 {
		o.BlockSize = 1 << 20
	}
	if len(o.QueueDepths) == 0 {
		o.QueueDepths = []int{1, 4, 16}
	}
	if o.MaxSeconds <= 0 {
		o.MaxSeconds = 10
	}
	r.logf("raw sequential speed of %s (%s, O_DIRECT)", path, kind)
	rep, err := rawSpeed(ctx, path, dev, o)
	if err != nil {
		rep = &RawReport{Note: err.Error()}
		r.logf("raw speed: %v", err)
	}
	rep.Path, rep.Kind, rep.BlockSize = path, kind, o.BlockSize
	r.rep.Raw = rep
}

// rawSpeed writes, then reads, the first o.Size bytes of path with
// O_DIRECT: on a device that destroys them; a file is created and removed.
func rawSpeed(ctx context.Context, path string, dev bool, o RawOptions) (*RawReport, error) {
	flags := unix.O_RDWR | unix.O_DIRECT | unix.O_CLOEXEC
	if dev {
		flags |= unix.O_EXCL
	} else {
		flags |= unix.O_CREAT | unix.O_EXCL
	}
	fd, err := unix.Open(path, flags, 0o600)
	if errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("O_DIRECT is not supported on %s (%s): no raw figure", filepath.Dir(path), fsType(filepath.Dir(path)))
	}
	if err != nil {
		return nil, fmt.Errorf("raw speed: opening %s: %w", path, err)
	}
	defer unix.Close(fd)
	if !dev {
		defer os.Remove(path)
	} else if n, err := unix.Seek(fd, 0, 2); err == nil {
		o.Size = min(o.Size, n)
	}
	o.Size = o.Size / int64(o.BlockSize) * int64(o.BlockSize)
	if o.Size == 0 {
		return nil, errors.New("raw speed: nothing to measure")
	}
	bufs := make([][]byte, 0, 16)
	defer func() {
		for _, b := range bufs {
			unix.Munmap(b)
		}
	}()
	ks := newKeystream(1, "raw")
	buffer := func(i int) ([]byte, error) {
		for len(bufs) <= i {
			b, err := unix.Mmap(-1, 0, o.BlockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
			if err != nil {
				return nil, fmt.Errorf("raw speed: %w", err)
			}
			ks.fill(b, int64(len(bufs))*int64(o.BlockSize)) // incompressible: no storage shortcut
			bufs = append(bufs, b)
		}
		return bufs[i], nil
	}
	rep := &RawReport{}
	written := int64(0)
	for _, mode := range []string{"write", "read"} {
		for _, qd := range o.QueueDepths {
			limit := o.Size
			if mode == "read" && !dev {
				limit = written
			}
			var next, done atomic.Int64
			var firstErr error
			var once sync.Once
			deadline := time.Now().Add(time.Duration(o.MaxSeconds * float64(time.Second)))
			t := time.Now()
			var wg sync.WaitGroup
			for i := range qd {
				b, err := buffer(i)
				if err != nil {
					return nil, err
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil && time.Now().Before(deadline) {
						off := next.Add(int64(o.BlockSize)) - int64(o.BlockSize)
						if off >= limit {
							return
						}
						var err error
						if mode == "write" {
							_, err = unix.Pwrite(fd, b, off)
						} else {
							_, err = unix.Pread(fd, b, off)
						}
						if err != nil {
							once.Do(func() { firstErr = fmt.Errorf("raw %s at %d: %w", mode, off, err) })
							return
						}
						done.Add(int64(o.BlockSize))
					}
				}()
			}
			wg.Wait()
			if firstErr != nil {
				return nil, firstErr
			}
			if mode == "write" {
				if err := unix.Fdatasync(fd); err != nil {
					return nil, fmt.Errorf("raw write: fdatasync: %w", err)
				}
				written = max(written, done.Load())
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			secs := since(t)
			rep.Points = append(rep.Points, RawPoint{Mode: mode, QueueDepth: qd, Bytes: done.Load(), Seconds: secs, MBps: float64(done.Load()) / secs / 1e6})
		}
	}
	return rep, nil
}
