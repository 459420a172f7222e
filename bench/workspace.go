package bench

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/location"
	"golang.org/x/sys/unix"
)

// The places a benchmark uses: the source (image file or device) and the
// repository locations.

// prepareSource writes the scenario to the device or image file when the
// runs read one.
func (r *runner) prepareSource(ctx context.Context, peers bool) error {
	cfg := r.cfg
	set := &r.rep.Setup
	set.Runs = cfg.Runs
	set.Child = len(cfg.Exec) > 0
	set.Verify = !cfg.NoVerify
	switch {
	case cfg.Device != "":
		r.source = cfg.Device
		set.Source = cfg.Device + " (block device, cold: page cache dropped before each export)"
		set.Target = cfg.Device
	case cfg.OnDisk || peers:
		r.source = filepath.Join(cfg.Work, "volume.img")
		cache := "warm: read into the page cache before each export"
		if cfg.Cold {
			cache = "cold: page cache dropped before each export"
		}
		set.Source = fmt.Sprintf("%s (image file on %s, %s)", r.source, fsType(cfg.Work), cache)
		set.Target = filepath.Join(cfg.Work, "target.img") + " (a new file on " + fsType(cfg.Work) + ")"
	default:
		set.Source = "computed on the fly (no disk; the read stage is the time to compute it): zero regions read and checked like a block device's"
		if cfg.Sparse {
			set.Source = "computed on the fly (no disk; the read stage is the time to compute it), sparse: zero regions reported as holes, never read"
		}
		set.Target = filepath.Join(cfg.Work, "target.img") + " (a new file on " + fsType(cfg.Work) + ")"
	}
	if r.source == "" {
		return nil
	}
	r.logf("writing the scenario to %s", r.source)
	f, err := r.openSource()
	if err != nil {
		return err
	}
	defer f.Close()
	if err := r.base.CopyTo(ctx, f); err != nil {
		return fmt.Errorf("writing the scenario to %s: %w", r.source, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing the scenario to %s: %w", r.source, err)
	}
	return nil
}

// writable is the source opened for writing: the image file, or the
// device (a mover.Device: zero regions become BLKZEROOUT, fast on thin
// storage).
type writable interface {
	io.WriterAt
	Sync() error
	Close() error
}

func (r *runner) openSource() (writable, error) {
	if r.cfg.Device != "" {
		d, err := mover.OpenTarget(r.source, r.base.Size(), mover.TargetOptions{})
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	f, err := os.OpenFile(r.source, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if err := f.Truncate(r.base.Size()); err != nil {
		f.Close()
		return nil, fmt.Errorf("image: %w", err)
	}
	return f, nil
}

func (r *runner) removeSource() {
	if r.source != "" && r.cfg.Device == "" {
		os.Remove(r.source)
	}
}

// sourcePath is what tools read: the image file or device.
func (r *runner) sourcePath() string { return r.source }

// prepareRead puts the source in the cache state of the benchmark before
// an export or backup: warm (read through) or cold (dropped).
func (r *runner) prepareRead() error {
	if r.source == "" {
		return nil
	}
	f, err := os.Open(r.source)
	if err != nil {
		return err
	}
	defer f.Close()
	if r.cfg.Device != "" || r.cfg.Cold {
		unix.Fdatasync(int(f.Fd()))
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	buf := make([]byte, 4<<20)
	for {
		_, err := f.Read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("warming %s: %w", r.source, err)
		}
	}
}

// changeSource applies (or reverts) the scenario's change on the image
// file or device.
func (r *runner) changeSource(ctx context.Context, revert bool) error {
	if r.source == "" {
		return nil
	}
	f, err := r.openSource()
	if err != nil {
		return err
	}
	defer f.Close()
	if revert {
		err = r.changed.Revert(ctx, f)
	} else {
		err = r.changed.Apply(ctx, f)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return fmt.Errorf("changing %s: %w", r.source, err)
	}
	return nil
}

// rootLocation is where this benchmark's repositories go.
func (r *runner) rootLocation(start time.Time) string {
	name := fmt.Sprintf("mover-bench-%s-%d", start.UTC().Format("20060102T150405"), os.Getpid())
	base := r.cfg.Repo
	if base == "" {
		base = filepath.Join(r.cfg.Work, "repos")
	}
	if location.IsS3(base) {
		return strings.TrimRight(base, "/") + "/" + name
	}
	return filepath.Join(base, name)
}

func (r *runner) location(round int, what string) string {
	name := fmt.Sprintf("r%d-%s", round+1, strings.NewReplacer("=", "-", "/", "-", " ", "-").Replace(what))
	if location.IsS3(r.repoRoot) {
		return r.repoRoot + "/" + name
	}
	return filepath.Join(r.repoRoot, name)
}

func (r *runner) locationFS(loc string) string {
	if location.IsS3(loc) {
		return "S3"
	}
	dir := loc
	for dir != "/" && dir != "." {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	return fsType(dir)
}

// removeLocation deletes a repository (or the root of all of them).
func (r *runner) removeLocation(ctx context.Context, loc string) {
	if !location.IsS3(loc) {
		os.RemoveAll(loc)
		return
	}
	be, err := r.cfg.Backend(ctx, loc, false)
	if err != nil {
		return
	}
	defer be.Close()
	var keys []string
	be.List(ctx, "", func(oi backend.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	})
	for _, k := range keys {
		be.Delete(ctx, k)
	}
}

// locationBytes is the size of everything stored at loc.
func (r *runner) locationBytes(ctx context.Context, loc string) int64 {
	var n int64
	if !location.IsS3(loc) {
		filepath.WalkDir(loc, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					n += fi.Size()
				}
			}
			return nil
		})
		return n
	}
	be, err := r.cfg.Backend(ctx, loc, false)
	if err != nil {
		return 0
	}
	defer be.Close()
	be.List(ctx, "", func(oi backend.ObjectInfo) error {
		n += oi.Size
		return nil
	})
	return n
}
