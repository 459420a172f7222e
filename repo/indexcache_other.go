//go:build !unix

package repo

import (
	"io"
	"os"
)

// cacheMap is a cache file read into memory (no mmap here).
type cacheMap struct {
	data []byte
}

func mapCache(f *os.File, size int) (*cacheMap, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(size)), b); err != nil {
		return nil, err
	}
	return &cacheMap{data: b}, nil
}

func (m *cacheMap) close()               { m.data = nil }
func (m *cacheMap) release([]indexEntry) {}
func (m *cacheMap) releaseAll()          {}
