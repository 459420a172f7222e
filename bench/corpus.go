package bench

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Corpus is real file data for File regions: the regular files under some
// directories, taken in turn from each directory (so their mix is even
// along the volume), in path order, as one stream that wraps around at the
// end. The stream is fixed when the corpus is listed, so any range of it
// can be read on its own (ReadAt, safe for concurrent use); Read reads it
// in order and is not safe for concurrent use.
type Corpus struct {
	files []corpusFile // in stream order
	ends  []int64      // ends[i]: stream offset just past files[i]
	total int64
	pos   int64 // Read's position
}

type corpusFile struct {
	path string
	size int64
}

// NewCorpus lists the regular files under dirs. Directories that do not
// exist are skipped; at least one non-empty file must be found.
func NewCorpus(dirs ...string) (*Corpus, error) {
	var lists [][]corpusFile
	for _, dir := range dirs {
		var files []corpusFile
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil && fi.Size() > 0 {
					files = append(files, corpusFile{path, fi.Size()})
				}
			}
			return nil
		})
		if len(files) > 0 {
			slices.SortFunc(files, func(a, b corpusFile) int {
				switch {
				case a.path < b.path:
					return -1
				case a.path > b.path:
					return 1
				}
				return 0
			})
			lists = append(lists, files)
		}
	}
	if len(lists) == 0 {
		return nil, fmt.Errorf("corpus %v holds no readable files", dirs)
	}
	c := &Corpus{}
	// Take turns between the directories, skipping those used up.
	next := make([]int, len(lists))
	for left := true; left; {
		left = false
		for d, files := range lists {
			if next[d] < len(files) {
				f := files[next[d]]
				next[d]++
				c.files = append(c.files, f)
				c.total += f.size
				c.ends = append(c.ends, c.total)
				left = true
			}
		}
	}
	return c, nil
}

// DefaultCorpusDirs are real files found on any Debian machine with Go:
// source code (about 4× compressible with zstd), shared data and binaries
// (about 2×). goroot is the Go installation's root (see GoRoot).
func DefaultCorpusDirs(goroot string) []string {
	return []string{filepath.Join(goroot, "src"), "/usr/share", "/usr/lib", "/usr/bin", filepath.Join(goroot, "pkg")}
}

// GoRoot returns the root of the Go installation on this machine: what
// `go env GOROOT` says, else the parent of the directory holding the go
// command found on PATH, else "" (then the corpus has no Go files).
func GoRoot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if root := strings.TrimSpace(string(out)); root != "" {
			return root
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(filepath.Dir(real))
		}
	}
	return ""
}

// Size returns the corpus's size in bytes before it wraps around.
func (c *Corpus) Size() int64 { return c.total }

// Read fills p with the next bytes of the stream.
func (c *Corpus) Read(p []byte) (int, error) {
	n, err := c.ReadAt(p, c.pos)
	c.pos += int64(n)
	return n, err
}

// ReadAt fills p with the stream's bytes at offset off (taken modulo the
// corpus size). It fails if a file can no longer be read in full (it was
// removed or shrank since the corpus was listed).
func (c *Corpus) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("corpus: negative offset %d", off)
	}
	off %= c.total
	n := 0
	for n < len(p) {
		i := sort.Search(len(c.ends), func(i int) bool { return c.ends[i] > off })
		f := c.files[i]
		start := c.ends[i] - f.size
		k := int(min(int64(len(p)-n), c.ends[i]-off))
		if err := readFileAt(f.path, p[n:n+k], off-start); err != nil {
			return n, err
		}
		n += k
		off += int64(k)
		if off == c.total {
			off = 0
		}
	}
	return n, nil
}

func readFileAt(path string, p []byte, off int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("corpus: %w", err)
	}
	defer f.Close()
	if _, err := f.ReadAt(p, off); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("corpus: %s changed since it was listed: %w", path, err)
	}
	return nil
}
