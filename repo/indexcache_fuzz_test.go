package repo

import (
	"testing"
)

// FuzzCacheFooter: the footer of an index cache file is read before the
// file is authenticated, so any bytes and any file size must give either
// an error or a layout whose sections lie inside the file, never a panic.
func FuzzCacheFooter(f *testing.F) {
	var repo ID
	repo[0] = 7
	good := newCacheLayout(1000, 3, 20, 40, 30)
	good.listed = 1
	f.Add(good.footerBytes(repo), int64(good.size))
	f.Add(make([]byte, cacheFooter), int64(4096))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		if len(b) >= 48 {
			copy(b[16:48], repo[:])
		}
		l, err := parseCacheFooter(b, repo, size)
		if err != nil {
			return
		}
		if l.size != int(size) || l.fan+65537*4 > l.filesOff || l.filePacksOff+l.filePacks*4 > l.packsOff ||
			l.packsOff+l.sealed > l.footer || l.mac+cacheMACSize != l.size || l.entries*entrySize > l.fan {
			t.Fatalf("layout %+v does not fit a file of %d bytes", l, size)
		}
	})
}
