package testdriver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sizeUnit is what volume capacities are rounded up to: a multiple of
// every allowed BlockSize, so FIXED_LENGTH blocks never run past the end.
const sizeUnit = 1 << 20

// volume is the record of a volume: volumes/<id>.json next to the data in
// volumes/<id>.img.
type volume struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Capacity int64  `json:"capacity"`
	// Source is "snapshot:<id>", "volume:<id>" or empty.
	Source string `json:"source,omitempty"`
}

// snapshot is the record of a snapshot: snapshots/<id>.json next to the
// copy of the volume's file in snapshots/<id>.img.
type snapshot struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	SourceVolume string    `json:"sourceVolume"`
	Size         int64     `json:"size"`
	Created      time.Time `json:"created"`
}

// store keeps the records and files under one directory. IDs derive from
// the CO's names, so a repeated Create finds what the first one made.
type store struct{ dir string }

const (
	volumePrefix   = "vol-"
	snapshotPrefix = "snap-"
)

var idPattern = regexp.MustCompile(`^(vol|snap)-[0-9a-f]{32}$`)

func idFor(prefix, name string) string {
	sum := sha256.Sum256([]byte(name))
	return prefix + hex.EncodeToString(sum[:16])
}

// init creates the directories and makes s.dir absolute with no symlinks,
// the form the kernel reports loop devices' backing files in.
func (s *store) init() error {
	for _, sub := range []string{"volumes", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(s.dir, sub), 0o700); err != nil {
			return err
		}
	}
	dir, err := filepath.Abs(s.dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	s.dir = dir
	return err
}

// path of the record (".json") or data (".img") of id; "" for an ID this
// driver never hands out, which callers treat as not found.
func (s *store) path(id, ext string) string {
	if !idPattern.MatchString(id) {
		return ""
	}
	sub := "volumes"
	if strings.HasPrefix(id, snapshotPrefix) {
		sub = "snapshots"
	}
	return filepath.Join(s.dir, sub, id+ext)
}

// load reads the record of id into v; it returns fs.ErrNotExist for an
// unknown ID or one of the wrong kind.
func (s *store) load(id, prefix string, v any) error {
	p := s.path(id, ".json")
	if p == "" || !strings.HasPrefix(id, prefix) {
		return fs.ErrNotExist
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (s *store) volume(id string) (*volume, error) {
	var v volume
	return &v, s.load(id, volumePrefix, &v)
}

func (s *store) snapshot(id string) (*snapshot, error) {
	var v snapshot
	return &v, s.load(id, snapshotPrefix, &v)
}

// save writes the record of id atomically (temp file, rename).
func (s *store) save(id string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	p := s.path(id, ".json")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// remove deletes the record first, so a crash in between leaves an orphan
// file rather than a record without data.
func (s *store) remove(id string) error {
	for _, ext := range []string{".json", ".img"} {
		if err := os.Remove(s.path(id, ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// snapshots lists every snapshot record, sorted by ID.
func (s *store) snapshots() ([]*snapshot, error) {
	names, err := filepath.Glob(filepath.Join(s.dir, "snapshots", snapshotPrefix+"*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []*snapshot
	for _, n := range names {
		sn, err := s.snapshot(strings.TrimSuffix(filepath.Base(n), ".json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sn)
	}
	return out, nil
}

// createImage writes the data file of id: a copy of src (sparse, may be
// nil) grown to size. It goes through a temp file, so a half-written
// image never carries the final name.
func (s *store) createImage(id string, src *os.File, size int64) error {
	p := s.path(id, ".img")
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = func() error {
		if src != nil {
			if err := copySparse(f, src); err != nil {
				return err
			}
		}
		if err := f.Truncate(size); err != nil {
			return err
		}
		return f.Sync()
	}()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// copySparse copies src into the empty file dst so that holes stay holes:
// a reflink where the filesystem has them (btrfs, xfs), else only the data
// extents (SEEK_DATA/SEEK_HOLE), each with copy_file_range. dst gets
// src's size.
func copySparse(dst, src *os.File) error {
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err == nil {
		return nil
	}
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	err = dataExtents(src, 0, fi.Size(), func(off, n int64) error {
		for n > 0 {
			roff, woff := off, off
			c, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(min(n, 1<<30)), 0)
			if err != nil || c == 0 {
				// No copy_file_range between these files: copy by hand.
				_, err := io.Copy(io.NewOffsetWriter(dst, off), io.NewSectionReader(src, off, n))
				return err
			}
			off, n = off+int64(c), n-int64(c)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("copy %s: %w", src.Name(), err)
	}
	return dst.Truncate(fi.Size())
}

// dataExtents calls fn with each data extent of f that overlaps [start,
// end), clipped to it, in offset order: the ranges SEEK_DATA/SEEK_HOLE
// report, so holes are skipped without reading.
func dataExtents(f *os.File, start, end int64, fn func(off, n int64) error) error {
	fd := int(f.Fd())
	for off := start; off < end; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			return nil // only a hole up to the end of the file
		}
		if err != nil {
			return fmt.Errorf("SEEK_DATA %s at %d: %w", f.Name(), off, err)
		}
		if data >= end {
			return nil
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("SEEK_HOLE %s at %d: %w", f.Name(), data, err)
		}
		hole = min(hole, end)
		if err := fn(data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}
