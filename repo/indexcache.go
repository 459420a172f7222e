package repo

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/zeebo/blake3"
)

// The local index cache keeps what loading the index files gave, so that
// the next open reads only the index files that are new since. It is one
// file per repository, named by the repository ID, in a directory of the
// user's (Options.IndexCache). It is local state, not part of the
// repository's format, and never trusted blindly:
//
//   - The whole file is authenticated with a key derived from the
//     repository's master key (keyed BLAKE3), checked on every open: a
//     damaged or truncated file, one of another repository, or one a
//     writer was killed in the middle of, is ignored and rebuilt.
//   - The pack keys in it are sealed (AES-256-GCM) like everything else
//     that holds them; blob IDs are keyed hashes. What the file reveals
//     to someone without the key is the number and sizes of blobs, as the
//     pack objects themselves do.
//   - It records which index files it holds, and which packs each names.
//     An open lists the index files, reads only those the cache lacks, and
//     leaves out every pack that no listed index file names: entries whose
//     index file is gone are never used. gc deletes a pack only after the
//     index files that name it (FORMAT.md, crash invariants 1 and 2), so
//     that is how an open learns of deleted packs without listing them.
//   - The packs of the index files read are looked up (a Stat each, or a
//     listing when there are many). The cache's own packs existed when they
//     were listed; a pack lost to damage since (not deleted by gc) goes
//     unnoticed by an open until the cache's pack list is older than
//     cacheRelist, when the open lists every pack again as it does without
//     a cache, and leaves out (and warns of) those that are missing.
//     `mover check` finds it at once.
//   - Writers write a new file beside it and rename it over the old one,
//     so concurrent processes each see a whole file; the last rename wins.
//
// Layout (entries and the fan-out table in the machine's byte order,
// which the footer records; the other integers little-endian), each
// section starting at a multiple of 64 bytes:
//
//	entries   n × 48 bytes: the sorted in-memory array (ID 32, pack 4,
//	          offset 4, stored length 4, raw length and flags 4)
//	fan       65,537 × uint32
//	files     f × (index file ID 32, first 4, count 4), sorted by ID
//	filePacks uint32 pack numbers, files[i] names [first, first+count)
//	packs     seal(Enc, p × (ID 32, key 32, ModTime ns int64, blobs
//	          uint32, 0 uint32), "blockmover index cache v1 <repo ID>"),
//	          sorted by ID: a pack's number is its position
//	footer    128 bytes (cacheFooter)
//	mac       32 bytes: see cacheMAC
//
// Memory: the entries and the fan-out table are mapped, not read (on
// Linux and other Unix systems), so an open pays in resident memory only
// for the pages its lookups touch, plus about 100 bytes per pack.

const (
	cacheMagic   = "blockmover-idxc1"
	cacheFooter  = 128
	cacheMACSize = 32
	cacheSegment = 16 << 20 // MAC segment: hashed in parallel
	entrySize    = int(unsafe.Sizeof(indexEntry{}))
	packRecSize  = 80
	fileRecSize  = 40
	endianMark   = 0x01020304
	aadCachePack = "blockmover index cache v1 "
)

func init64(n int) int { return (n + 63) &^ 63 }

// cacheLayout is where each section of a cache file starts.
type cacheLayout struct {
	entries, shadowed, files, filePacks, packs, sealed       int   // counts
	listed                                                   int64 // see indexCache.listed
	fan, filesOff, filePacksOff, packsOff, footer, mac, size int   // offsets
}

func newCacheLayout(entries, shadowed, files, filePacks, packs int) cacheLayout {
	l := cacheLayout{entries: entries, shadowed: shadowed, files: files, filePacks: filePacks, packs: packs}
	l.sealed = packs*packRecSize + Overhead
	l.fan = init64(entries * entrySize)
	l.filesOff = init64(l.fan + 65537*4)
	l.filePacksOff = l.filesOff + files*fileRecSize
	l.packsOff = init64(l.filePacksOff + filePacks*4)
	l.footer = init64(l.packsOff + l.sealed)
	l.mac = l.footer + cacheFooter
	l.size = l.mac + cacheMACSize
	return l
}

func (l cacheLayout) footerBytes(repo ID) []byte {
	b := make([]byte, 0, cacheFooter)
	b = append(b, cacheMagic...)
	b = append(b, repo[:]...)
	b = binary.NativeEndian.AppendUint32(b, endianMark)
	b = binary.LittleEndian.AppendUint32(b, uint32(entrySize))
	for _, v := range []int{l.entries, l.shadowed, l.files, l.filePacks, l.packs} {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(l.listed))
	return append(b, make([]byte, cacheFooter-len(b))...)
}

// parseCacheFooter checks a footer against the repository and the file's
// size, and returns the layout it describes.
func parseCacheFooter(b []byte, repo ID, size int64) (cacheLayout, error) {
	if len(b) != cacheFooter || string(b[:16]) != cacheMagic {
		return cacheLayout{}, errors.New("not an index cache file")
	}
	if !bytes.Equal(b[16:48], repo[:]) {
		return cacheLayout{}, errors.New("the cache of another repository")
	}
	if binary.NativeEndian.Uint32(b[48:]) != endianMark || binary.LittleEndian.Uint32(b[52:]) != uint32(entrySize) {
		return cacheLayout{}, errors.New("written by another kind of machine")
	}
	var v [5]int
	for i := range v {
		u := binary.LittleEndian.Uint64(b[56+8*i:])
		if u > uint64(size) {
			return cacheLayout{}, errors.New("counts exceed the file")
		}
		v[i] = int(u)
	}
	l := newCacheLayout(v[0], v[1], v[2], v[3], v[4])
	l.listed = int64(binary.LittleEndian.Uint64(b[96:]))
	if int64(l.size) != size {
		return cacheLayout{}, fmt.Errorf("%d bytes, the footer says %d", size, l.size)
	}
	return l, nil
}

// cacheMACKey derives the key that authenticates cache files from the
// master key: a cache is only trusted by the repository that wrote it.
func (r *Repository) cacheMACKey() []byte {
	h, _ := blake3.NewKeyed(r.key.Enc[:])
	h.WriteString("blockmover index cache mac v1")
	return h.Sum(nil)
}

// segmentMAC is the keyed hash of one MAC segment, bound to its number.
func segmentMAC(key []byte, seg int, data []byte) [32]byte {
	h, _ := blake3.NewKeyed(key)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(seg))
	h.Write(n[:])
	h.Write(data)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// finalMAC combines the segment MACs of a file of size bytes.
func finalMAC(key []byte, size int, segs [][32]byte) []byte {
	h, _ := blake3.NewKeyed(key)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(size))
	h.Write(n[:])
	for _, s := range segs {
		h.Write(s[:])
	}
	return h.Sum(nil)
}

// macWriter writes through to w and computes the cache MAC of what it
// wrote, segment by segment.
type macWriter struct {
	w    *bufio.Writer
	key  []byte
	seg  []byte
	segs [][32]byte
	n    int
}

func (m *macWriter) Write(p []byte) (int, error) {
	n, err := m.w.Write(p)
	m.n += n
	for q := p[:n]; len(q) > 0; {
		k := min(len(q), cacheSegment-len(m.seg))
		m.seg = append(m.seg, q[:k]...)
		q = q[k:]
		if len(m.seg) == cacheSegment {
			m.segs = append(m.segs, segmentMAC(m.key, len(m.segs), m.seg))
			m.seg = m.seg[:0]
		}
	}
	return n, err
}

func (m *macWriter) pad(to int) error {
	if to > m.n {
		_, err := m.Write(make([]byte, to-m.n))
		return err
	}
	return nil
}

func (m *macWriter) sum() []byte {
	if len(m.seg) > 0 {
		m.segs = append(m.segs, segmentMAC(m.key, len(m.segs), m.seg))
	}
	return finalMAC(m.key, m.n, m.segs)
}

// verifyCacheMAC checks the MAC of the cache file f (size bytes), reading
// it with pread in parallel: the page cache holds it, not this process.
func verifyCacheMAC(f *os.File, key []byte, size int) error {
	body := size - cacheMACSize
	nseg := (body + cacheSegment - 1) / cacheSegment
	segs := make([][32]byte, nseg)
	errs := make([]error, nseg)
	var wg sync.WaitGroup
	var next atomic.Int64
	for range min(runtime.GOMAXPROCS(0), nseg) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, cacheSegment) // one per worker
			for i := int(next.Add(1) - 1); i < nseg; i = int(next.Add(1) - 1) {
				b := buf[:min(cacheSegment, body-i*cacheSegment)]
				if _, err := f.ReadAt(b, int64(i*cacheSegment)); err != nil {
					errs[i] = err
					return
				}
				segs[i] = segmentMAC(key, i, b)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	want := make([]byte, cacheMACSize)
	if _, err := f.ReadAt(want, int64(body)); err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(finalMAC(key, body, segs), want) != 1 {
		return errors.New("damaged (authentication failed)")
	}
	return nil
}

// indexCache is a cache file opened and checked.
type indexCache struct {
	m        *cacheMap
	entries  []indexEntry // mapped
	fan      []uint32     // mapped
	packs    []packRef    // sorted by ID
	files    map[string][]uint32
	shadowed int
	// listed is when (Unix seconds, local clock) the packs of the cache
	// were last checked against a listing of the repository's packs.
	listed int64
}

// has returns the pack numbers that index file name names, if the cache
// holds it; a nil cache holds nothing.
func (c *indexCache) has(name string) ([]uint32, bool) {
	if c == nil {
		return nil, false
	}
	p, ok := c.files[name]
	return p, ok
}

// cachePath returns the cache file of this repository in dir.
func (r *Repository) cachePath(dir string) string {
	return filepath.Join(dir, r.id.String())
}

// readIndexCache opens and checks this repository's cache file in dir. A
// missing file is (nil, nil); any other failure says why the file cannot
// be used.
func (r *Repository) readIndexCache(dir string) (*indexCache, error) {
	f, err := os.Open(r.cachePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < cacheFooter+cacheMACSize || size > 1<<40 {
		return nil, fmt.Errorf("%d bytes: not an index cache file", size)
	}
	foot := make([]byte, cacheFooter)
	if _, err := f.ReadAt(foot, size-cacheFooter-cacheMACSize); err != nil {
		return nil, err
	}
	l, err := parseCacheFooter(foot, r.id, size)
	if err != nil {
		return nil, err
	}
	key := r.cacheMACKey()
	if err := verifyCacheMAC(f, key, l.size); err != nil {
		return nil, err
	}
	m, err := mapCache(f, l.size)
	if err != nil {
		return nil, err
	}
	c, err := r.decodeIndexCache(m, l)
	if err != nil {
		m.close()
		return nil, err
	}
	return c, nil
}

// decodeIndexCache reads the sections of an authenticated cache file.
func (r *Repository) decodeIndexCache(m *cacheMap, l cacheLayout) (*indexCache, error) {
	b := m.data
	c := &indexCache{m: m, shadowed: l.shadowed, listed: l.listed, files: make(map[string][]uint32, l.files)}
	if l.entries > 0 {
		c.entries = unsafe.Slice((*indexEntry)(unsafe.Pointer(&b[0])), l.entries)
	}
	c.fan = unsafe.Slice((*uint32)(unsafe.Pointer(&b[l.fan])), 65537)
	plain, err := open(r.aead, nil, b[l.packsOff:l.packsOff+l.sealed], r.cachePackAAD())
	if err != nil {
		return nil, fmt.Errorf("pack table: %w", err)
	}
	c.packs = make([]packRef, l.packs)
	for i := range c.packs {
		rec := plain[i*packRecSize:]
		p := &c.packs[i]
		copy(p.id[:], rec[:32])
		copy(p.key[:], rec[32:64])
		p.mod = int64(binary.LittleEndian.Uint64(rec[64:]))
		p.blobs = binary.LittleEndian.Uint32(rec[72:])
		if i > 0 && bytes.Compare(c.packs[i-1].id[:], p.id[:]) >= 0 {
			return nil, errors.New("pack table out of order")
		}
	}
	var fp []uint32
	if l.filePacks > 0 {
		fp = unsafe.Slice((*uint32)(unsafe.Pointer(&b[l.filePacksOff])), l.filePacks)
	}
	for i := range l.files {
		rec := b[l.filesOff+i*fileRecSize:]
		var id ID
		copy(id[:], rec[:32])
		first, n := binary.LittleEndian.Uint32(rec[32:]), binary.LittleEndian.Uint32(rec[36:])
		if uint64(first)+uint64(n) > uint64(len(fp)) {
			return nil, errors.New("file table out of range")
		}
		packs := fp[first : first+n : first+n]
		for _, p := range packs {
			if int(p) >= l.packs {
				return nil, errors.New("file table names an unknown pack")
			}
		}
		c.files[indexPrefix+id.String()] = packs
	}
	// The fan-out table must describe the entries, or lookups would
	// read out of range.
	if c.fan[0] != 0 || int(c.fan[65536]) != l.entries {
		return nil, errors.New("fan-out table does not match the entries")
	}
	for k := range 65536 {
		if c.fan[k] > c.fan[k+1] {
			return nil, errors.New("fan-out table out of order")
		}
	}
	return c, nil
}

func (r *Repository) cachePackAAD() []byte { return []byte(aadCachePack + r.id.String()) }

// index returns an index whose sorted array is the cache's entries, with
// packs condemned as the newest gc state says. Nothing in the mapped
// file is written: entries added later go to recent (see put).
func (c *indexCache) index(condemned []ID) *index {
	x := newIndex()
	x.packs = c.packs
	x.nBase = len(c.packs)
	for lo := 0; lo < len(c.entries); lo += blockLen {
		hi := min(lo+blockLen, len(c.entries))
		x.main = append(x.main, c.entries[lo:hi:hi])
	}
	x.n = len(c.entries)
	x.fan = c.fan
	x.shadowed = c.shadowed
	x.mapped = c.m
	x.condemn(condemned)
	return x
}

// writeIndexCache writes x (packs that are not gone, their entries) and
// the index files that name them (files: pack numbers of x) as this
// repository's cache file in dir, through a temporary file renamed over
// the old one.
func (r *Repository) writeIndexCache(dir string, x *index, files map[string][]uint32, listed int64) (err error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+r.id.String()[:16]+"-*")
	if err != nil {
		return err
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	// Number the packs that stay in ID order.
	keep := make([]uint32, 0, len(x.packs))
	for i, p := range x.packs {
		if !p.gone {
			keep = append(keep, uint32(i))
		}
	}
	slices.SortFunc(keep, func(a, b uint32) int { return bytes.Compare(x.packs[a].id[:], x.packs[b].id[:]) })
	renum := make([]uint32, len(x.packs))
	for i := range renum {
		renum[i] = ^uint32(0)
	}
	for n, i := range keep {
		renum[i] = uint32(n)
	}
	mw := &macWriter{w: bufio.NewWriterSize(tmp, 1<<20), key: r.cacheMACKey()}
	fan, blobs, n, shadowed, err := x.writeEntries(mw, renum)
	if err != nil {
		return err
	}
	if err := mw.pad(init64(n * entrySize)); err != nil {
		return err
	}
	if err := binary.Write(mw, binary.NativeEndian, fan); err != nil {
		return err
	}
	if err := mw.pad(newCacheLayout(n, shadowed, len(files), 0, len(keep)).filesOff); err != nil {
		return err
	}
	nfp, err := writeFileTable(mw, files, renum)
	if err != nil {
		return err
	}
	l := newCacheLayout(n, shadowed, len(files), nfp, len(keep))
	plain := make([]byte, 0, len(keep)*packRecSize)
	for i, pi := range keep {
		p := x.packs[pi]
		plain = append(plain, p.id[:]...)
		plain = append(plain, p.key[:]...)
		plain = binary.LittleEndian.AppendUint64(plain, uint64(p.mod))
		plain = binary.LittleEndian.AppendUint32(plain, blobs[i])
		plain = binary.LittleEndian.AppendUint32(plain, 0)
	}
	if err := mw.pad(l.packsOff); err != nil {
		return err
	}
	if _, err := mw.Write(seal(r.aead, nil, plain, r.cachePackAAD())); err != nil {
		return err
	}
	if err := mw.pad(l.footer); err != nil {
		return err
	}
	l.listed = listed
	if _, err := mw.Write(l.footerBytes(r.id)); err != nil {
		return err
	}
	if _, err := mw.w.Write(mw.sum()); err != nil {
		return err
	}
	if err := mw.w.Flush(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// No fsync: a file cut short by a crash fails its MAC and is rebuilt.
	return os.Rename(tmp.Name(), r.cachePath(dir))
}

// writeFileTable writes the file table and the pack numbers it points
// into (renumbered), and returns how many of those it wrote.
func writeFileTable(w io.Writer, files map[string][]uint32, renum []uint32) (int, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	var fp []uint32
	for _, name := range names {
		id, err := ParseID(name[len(indexPrefix):])
		if err != nil {
			return 0, err
		}
		first := len(fp)
		for _, p := range files[name] {
			fp = append(fp, renum[p])
		}
		rec := binary.LittleEndian.AppendUint32(append(id[:0:0], id[:]...), uint32(first))
		rec = binary.LittleEndian.AppendUint32(rec, uint32(len(fp)-first))
		if _, err := w.Write(rec); err != nil {
			return 0, err
		}
	}
	return len(fp), binary.Write(w, binary.NativeEndian, fp)
}

// writeEntries writes the entries of packs that are not gone, main and
// recent merged in ID order, renumbered; it returns the fan-out table,
// the blob count of each kept pack (by new number), how many entries it
// wrote and how many of them copies of a blob another entry holds.
// Caller holds a read lock.
func (x *index) writeEntries(w io.Writer, renum []uint32) (fan []uint32, blobs []uint32, n, shadowed int, err error) {
	add := make([]indexEntry, 0, len(x.recent))
	for _, e := range x.recent {
		add = append(add, e)
	}
	slices.SortFunc(add, cmpEntry)
	fan = make([]uint32, 65537)
	kept := 0
	for _, r := range renum {
		if r != ^uint32(0) {
			kept++
		}
	}
	blobs = make([]uint32, kept)
	buf := make([]indexEntry, 0, 4096)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		_, err := w.Write(unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*entrySize))
		buf = buf[:0]
		return err
	}
	var last ID
	emit := func(e indexEntry) error {
		p := renum[e.pack]
		if p == ^uint32(0) {
			return nil
		}
		if n > 0 && e.id == last {
			shadowed++
		}
		last = e.id
		e.pack = p
		blobs[p]++
		fan[prefix16(e.id)+1]++
		n++
		buf = append(buf, e)
		if len(buf) == cap(buf) {
			return flush()
		}
		return nil
	}
	i, j := 0, 0
	for i < x.n || j < len(add) {
		var e indexEntry
		if j == len(add) || i < x.n && cmpEntry(*x.at(i), add[j]) <= 0 {
			e = *x.at(i)
			i++
			if i&(blockLen-1) == 0 && x.mapped != nil {
				x.mapped.release(x.main[(i-1)>>blockShift])
			}
		} else {
			e = add[j]
			j++
		}
		if err := emit(e); err != nil {
			return nil, nil, 0, 0, err
		}
	}
	if err := flush(); err != nil {
		return nil, nil, 0, 0, err
	}
	for k := 1; k < len(fan); k++ {
		fan[k] += fan[k-1]
	}
	return fan, blobs, n, shadowed, nil
}
