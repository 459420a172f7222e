// Package fs is a backend that stores objects as files under a local
// directory: key "data/ab/ab12…" is the file <dir>/data/ab/ab12…. The
// directory may be a local disk or a network file system (NFS, a mounted
// PersistentVolume).
//
// Puts are atomic and create-only, also across processes sharing the
// directory: the data is written to a temporary file in the destination
// directory and fsynced, then hard-linked to its final name, which fails if
// the name exists; then the directory is fsynced. A crash leaves at most a
// temporary file behind, never a partial object. Temporary files start with
// backend.TempPrefix and are never listed. On file systems without hard
// links the link is replaced by a rename guarded by an O_EXCL lock file (see
// Backend.Put).
//
// On Linux, objects of 1 MiB or more (packs) are written around the page
// cache (O_DIRECT) where the file system allows it, except on tmpfs: no
// copy into the kernel, no dirty pages for the fsync to write from the
// writer's thread (see writeData). A later read of the object comes from
// the storage, not from memory.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
)

// Permissions of what the backend creates. Objects are made read-only: they
// are never modified, only deleted (which needs write permission on the
// directory only).
const (
	dirMode    = 0o700
	objectMode = 0o400
)

// staleLock is the age beyond which a lock file of the no-link fallback is
// taken to be left by a crash. A live lock is held for a stat and a rename.
const staleLock = time.Minute

// Backend stores objects as files under a directory. It is safe for
// concurrent use, also by several processes sharing the directory. The tree
// below the directory must hold real directories and files: List does not
// follow symbolic links, and a symbolic link is not an object.
type Backend struct {
	dir    string      // absolute, symbolic links resolved
	noLink atomic.Bool // hard links are unsupported: use linkless puts
	closed atomic.Bool
}

var _ backend.Backend = (*Backend)(nil)

// Open returns a backend for the existing directory dir.
func Open(dir string) (*Backend, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fs: open %q: %w", dir, err)
	}
	// Resolve links once so that walking the tree starts in a directory,
	// not at a symbolic link (WalkDir does not follow links).
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("fs: open %q: %w", dir, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("fs: open %q: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("fs: open %q: not a directory", dir)
	}
	return &Backend{dir: real}, nil
}

// Create creates dir and its parents as needed (like mkdir -p), private to
// its owner (mode 0700), and opens it. A directory that exists and holds
// nothing but directories is made private too (a repository's key files
// and the names of its objects are nobody else's business), unless the
// caller does not own it (EPERM: e.g. a volume shared through its group);
// a directory that holds files keeps its mode.
func Create(dir string) (*Backend, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("fs: create %q: %w", dir, err)
	}
	b, err := Open(dir)
	if err != nil {
		return nil, err
	}
	empty, err := onlyDirs(b.dir)
	if err != nil {
		return nil, fmt.Errorf("fs: create %q: %w", dir, err)
	}
	if empty {
		if err := os.Chmod(b.dir, dirMode); err != nil && !errors.Is(err, iofs.ErrPermission) {
			return nil, fmt.Errorf("fs: create %q: %w", dir, err)
		}
	}
	return b, nil
}

// onlyDirs reports whether the tree under dir holds nothing but
// directories.
func onlyDirs(dir string) (bool, error) {
	only := true
	err := filepath.WalkDir(dir, func(path string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			only = false
			return filepath.SkipAll
		}
		return nil
	})
	return only, err
}

// Dir returns the absolute directory the backend stores objects in.
func (b *Backend) Dir() string { return b.dir }

// path checks a call and maps key to its file name.
func (b *Backend) path(ctx context.Context, op backend.Op, key string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("fs: %s %q: %w", op, key, err)
	}
	if b.closed.Load() {
		return "", fmt.Errorf("fs: %s %q: %w: backend is closed", op, key, backend.ErrPermanent)
	}
	if err := backend.CheckKey(key); err != nil {
		return "", fmt.Errorf("fs: %s: %w", op, err)
	}
	rel := filepath.FromSlash(key)
	if !filepath.IsLocal(rel) { // defence in depth, e.g. reserved names on Windows
		return "", fmt.Errorf("fs: %s: %w %q: not a local path", op, backend.ErrInvalidKey, key)
	}
	return filepath.Join(b.dir, rel), nil
}

// notFound reports whether err from the file system means a key is absent,
// including when a parent "directory" is a file.
func notFound(err error) bool {
	return errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// classify marks file system errors that retrying cannot fix.
func classify(err error) error {
	if errors.Is(err, iofs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("%w (%w)", err, backend.ErrPermanent)
	}
	return err
}

// existsError explains why name cannot be created.
func existsError(key, name string) error {
	if fi, err := os.Lstat(name); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("fs: put %q: %w: %s is not a regular file", key, backend.ErrPermanent, name)
	}
	return fmt.Errorf("fs: put %q: %w", key, backend.ErrExists)
}

// Put stores data under key, atomically and create-only: a temporary file
// in the key's directory is written and fsynced, then hard-linked to the
// final name (link fails if the name exists, which makes concurrent Puts of
// one key safe across processes), removed, and the directory is fsynced.
//
// If the file system does not support hard links, Put instead takes a lock
// file created with O_EXCL next to the final name, checks that the name is
// free and renames the temporary file onto it. This is as atomic for
// readers, and create-only among writers, except that a lock older than a
// minute is taken to be left by a crash and broken.
//
// Put does not retain data. It returns an error wrapping backend.ErrExists
// if key exists, and backend.ErrPermanent for permission errors or a key
// whose parent is an object.
func (b *Backend) Put(ctx context.Context, key string, data []byte) error {
	return b.put(ctx, key, data, true)
}

// PutVolatile is Put without the fsyncs (backend.VolatilePutter): as
// atomic for readers and as create-only, but the object may be lost, or
// left empty, by a crash of the machine.
func (b *Backend) PutVolatile(ctx context.Context, key string, data []byte) error {
	return b.put(ctx, key, data, false)
}

func (b *Backend) put(ctx context.Context, key string, data []byte, durable bool) error {
	name, err := b.path(ctx, backend.OpPut, key)
	if err != nil {
		return err
	}
	// Cheap early answer; the link below is what decides.
	if _, err := os.Lstat(name); err == nil {
		return existsError(key, name)
	}
	dir := filepath.Dir(name)
	tmp, err := b.writeTemp(dir, data, durable)
	if err != nil {
		return fmt.Errorf("fs: put %q: %w", key, err)
	}
	defer os.Remove(tmp) // after a successful link, only the temporary name goes
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs: put %q: %w", key, err)
	}
	if err := b.publish(ctx, key, tmp, name); err != nil {
		return err
	}
	if !durable {
		return nil
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("fs: put %q: %w", key, classify(err))
	}
	return nil
}

// writeTemp writes data to a new read-only temporary file in dir, fsynced
// if durable, creating dir if needed, and returns its name.
func (b *Backend) writeTemp(dir string, data []byte, durable bool) (string, error) {
	f, err := os.CreateTemp(dir, backend.TempPrefix+"*")
	if notFound(err) { // ENOTDIR, if a parent is an object, fails in mkdirs
		if err := b.mkdirs(dir); err != nil {
			return "", err
		}
		f, err = os.CreateTemp(dir, backend.TempPrefix+"*")
	}
	if err != nil {
		return "", classify(err)
	}
	_, err = writeData(f, data)
	if err == nil && durable {
		err = f.Sync()
	}
	if err == nil {
		err = f.Chmod(objectMode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", classify(err)
	}
	return f.Name(), nil
}

// mkdirs creates dir (below b.dir) and its missing parents, and fsyncs the
// parents so the new entries survive a crash.
func (b *Backend) mkdirs(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, iofs.ErrExist) {
			return fmt.Errorf("%w: a parent of the key is an object: %w", backend.ErrPermanent, err)
		}
		return classify(err)
	}
	// Another Put may have created some of the directories and not yet
	// synced their parents: sync the whole chain up to b.dir.
	for d := dir; d != b.dir; {
		parent := filepath.Dir(d)
		if parent == d || len(parent) < len(b.dir) {
			break
		}
		if err := syncDir(parent); err != nil {
			return classify(err)
		}
		d = parent
	}
	return nil
}

// publish gives the complete temporary file tmp its final name, unless the
// name exists.
func (b *Backend) publish(ctx context.Context, key, tmp, name string) error {
	if !b.noLink.Load() {
		err := os.Link(tmp, name)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, iofs.ErrExist):
			return existsError(key, name)
		case !linkUnsupported(err):
			return fmt.Errorf("fs: put %q: %w", key, classify(err))
		}
		b.noLink.Store(true)
	}
	return b.renameExclusive(ctx, key, tmp, name)
}

// linkUnsupported reports whether err from link(2) means the file system
// has no hard links (FAT, some SMB and FUSE mounts).
func linkUnsupported(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS)
}

// renameExclusive renames tmp to name unless name exists, under a lock file
// created with O_EXCL.
func (b *Backend) renameExclusive(ctx context.Context, key, tmp, name string) error {
	lock := filepath.Join(filepath.Dir(name), backend.TempPrefix+"lock-"+filepath.Base(name))
	for delay := time.Millisecond; ; {
		f, err := os.OpenFile(lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			f.Close()
			break
		}
		if !errors.Is(err, iofs.ErrExist) {
			return fmt.Errorf("fs: put %q: lock: %w", key, classify(err))
		}
		if fi, err := os.Lstat(lock); err == nil && time.Since(fi.ModTime()) > staleLock {
			os.Remove(lock)
			continue
		}
		if err := backend.Sleep(ctx, delay); err != nil {
			return fmt.Errorf("fs: put %q: waiting for lock: %w", key, err)
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
	defer os.Remove(lock)
	if _, err := os.Lstat(name); err == nil {
		return existsError(key, name)
	} else if !notFound(err) {
		return fmt.Errorf("fs: put %q: %w", key, classify(err))
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("fs: put %q: %w", key, classify(err))
	}
	return nil
}

// syncDir fsyncs a directory, so entries created or renamed in it are
// durable. File systems that cannot sync directories are tolerated.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}

// Get returns a reader of length bytes of key from offset (length < 0: to
// the end). The reader also implements io.ReaderAt and io.Seeker within the
// range. It reads the open file, so it stays valid if the object is deleted
// meanwhile; it does not observe ctx after Get returns.
func (b *Backend) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	name, err := b.path(ctx, backend.OpGet, key)
	if err != nil {
		return nil, err
	}
	f, size, err := openObject(name)
	if err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("fs: get %q: %w", key, backend.ErrNotFound)
		}
		return nil, fmt.Errorf("fs: get %q: %w", key, classify(err))
	}
	if offset < 0 || offset > size || length > size-offset {
		f.Close()
		return nil, fmt.Errorf("fs: get %q: %w: offset %d length %d in object of %d bytes",
			key, backend.ErrInvalidRange, offset, length, size)
	}
	if length < 0 {
		length = size - offset
	}
	return &fileReader{SectionReader: io.NewSectionReader(f, offset, length), f: f}, nil
}

// openObject opens the regular file name and returns its size. Anything
// else, a symbolic link included, does not exist as an object.
func openObject(name string) (*os.File, int64, error) {
	fi, err := os.Lstat(name)
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, iofs.ErrNotExist
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, err
	}
	if fi, err = f.Stat(); err == nil && !fi.Mode().IsRegular() {
		err = iofs.ErrNotExist // replaced since the Lstat
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

type fileReader struct {
	*io.SectionReader
	f *os.File
}

func (r *fileReader) Close() error { return r.f.Close() }

// Stat implements backend.Backend. ModTime is the file's modification time.
func (b *Backend) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	name, err := b.path(ctx, backend.OpStat, key)
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	fi, err := os.Lstat(name)
	if err != nil {
		if notFound(err) {
			return backend.ObjectInfo{}, fmt.Errorf("fs: stat %q: %w", key, backend.ErrNotFound)
		}
		return backend.ObjectInfo{}, fmt.Errorf("fs: stat %q: %w", key, classify(err))
	}
	if !fi.Mode().IsRegular() {
		return backend.ObjectInfo{}, fmt.Errorf("fs: stat %q: %w", key, backend.ErrNotFound)
	}
	return backend.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List walks the directory tree from the deepest directory the prefix
// names, in lexical order, skipping temporary files and anything that is
// not a regular file. fn may call the backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs: list %q: %w", prefix, err)
	}
	if b.closed.Load() {
		return fmt.Errorf("fs: list %q: %w: backend is closed", prefix, backend.ErrPermanent)
	}
	start := b.dir
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		if backend.CheckKey(prefix[:i]) != nil {
			return nil // no valid key has this prefix
		}
		start = filepath.Join(b.dir, filepath.FromSlash(prefix[:i]))
	}
	var fnErr error
	err := filepath.WalkDir(start, func(path string, d iofs.DirEntry, err error) error {
		if err != nil {
			if notFound(err) {
				return nil // start is missing, or a directory vanished
			}
			return classify(err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if path == b.dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), backend.TempPrefix) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		key := filepath.ToSlash(path[len(b.dir)+1:])
		if d.IsDir() {
			key += "/"
			if path != start && !strings.HasPrefix(key, prefix) && !strings.HasPrefix(prefix, key) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if notFound(err) {
				return nil // deleted meanwhile
			}
			return classify(err)
		}
		if err := fn(backend.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			fnErr = err // returned as is, even if it is fs.SkipDir or fs.SkipAll
			return filepath.SkipAll
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("fs: list %q: %w", prefix, err)
	}
	return nil
}

// RemoveStaleTemp implements backend.TempCleaner: it deletes the files
// whose names start with backend.TempPrefix (unpublished writes and
// publication locks) that were last modified more than olderThan ago.
func (b *Backend) RemoveStaleTemp(ctx context.Context, olderThan time.Duration) (int, int64, error) {
	if b.closed.Load() {
		return 0, 0, fmt.Errorf("fs: removing temporary files: %w: backend is closed", backend.ErrPermanent)
	}
	limit := time.Now().Add(-olderThan)
	files, bytes := 0, int64(0)
	err := filepath.WalkDir(b.dir, func(path string, d iofs.DirEntry, err error) error {
		if err != nil {
			if notFound(err) {
				return nil
			}
			return classify(err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !strings.HasPrefix(d.Name(), backend.TempPrefix) || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.ModTime().After(limit) {
			return nil // gone meanwhile, or young
		}
		if err := os.Remove(path); err != nil {
			if notFound(err) {
				return nil
			}
			return classify(err)
		}
		files++
		bytes += fi.Size()
		return nil
	})
	if err != nil {
		return files, bytes, fmt.Errorf("fs: removing temporary files: %w", err)
	}
	return files, bytes, nil
}

// Delete removes key's file. Empty directories are left in place (a
// concurrent Put may be about to use them).
func (b *Backend) Delete(ctx context.Context, key string) error {
	name, err := b.path(ctx, backend.OpDelete, key)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(name)
	if err == nil && !fi.Mode().IsRegular() {
		err = iofs.ErrNotExist // never remove a directory
	}
	if err == nil {
		err = os.Remove(name)
	}
	if err != nil {
		if notFound(err) {
			return fmt.Errorf("fs: delete %q: %w", key, backend.ErrNotFound)
		}
		return fmt.Errorf("fs: delete %q: %w", key, classify(err))
	}
	return nil
}

// Close marks the backend closed; later calls fail with an error wrapping
// backend.ErrPermanent. Open readers stay valid. Closing twice is harmless.
func (b *Backend) Close() error {
	b.closed.Store(true)
	return nil
}
