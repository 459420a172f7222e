package repo

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"
)

// BlobRef locates a blob: its pack, its place in it and the pack's key.
type BlobRef struct {
	Type       BlobType
	ID         ID
	Pack       ID
	PackKey    [keySize]byte
	Offset     uint32
	Length     uint32
	RawLength  uint32
	Compressed bool
}

// indexEntry is the in-memory form of one index record: 48 bytes.
type indexEntry struct {
	id   ID
	pack uint32 // into index.packs
	off  uint32
	len  uint32
	raw  uint32 // raw length | rawCompressed | rawPage
}

const (
	rawCompressed = 1 << 31
	rawPage       = 1 << 30
	rawMask       = rawPage - 1
)

type packRef struct {
	id  ID
	key [keySize]byte
	// mod is the pack's ModTime by the storage's clock in Unix
	// nanoseconds, when known (zero for packs this process wrote): of two
	// copies of a blob, the newer pack's is preferred, so that a repacked
	// copy wins over the original whatever order index files load in.
	mod int64
	// condemned packs are unreferenced and due for deletion by gc: their
	// blobs can still be read, but writers must not deduplicate against
	// them (see FORMAT.md, "Garbage collection").
	condemned bool
	// gone packs are left out: their entries stay in the sorted array
	// (which a cache file may back, read-only) but no lookup returns
	// them. A pack is gone when it does not exist, or when no index file
	// that still exists names it.
	gone bool
	// blobs is the number of the pack's entries in a cache file.
	blobs uint32
}

// index maps blob IDs to their packs. Most entries live in one sorted array
// of fixed-size blocks with a fan-out table on the first two bytes (48
// bytes per entry plus 256 KiB); entries added since the last merge live in
// a map that is merged in when it grows past an eighth of the array. The
// merge streams block by block, freeing each old block as it is consumed,
// so memory never doubles. All methods are safe for concurrent use.
type index struct {
	mu    sync.RWMutex
	packs []packRef
	// nBase: packs[:nBase] are sorted by ID and found by a binary
	// search (a cache file's); packIdx numbers the others.
	nBase   int
	packIdx map[ID]uint32
	main    [][]indexEntry // blocks of blockLen entries, all full but the last
	n       int            // entries in main
	fan     []uint32       // len 65537: positions [fan[k], fan[k+1]) start with k
	recent  map[ID]indexEntry
	pending map[ID]struct{}
	// condemnedIDs are the packs the newest gc state condemns, also those
	// not added yet.
	condemnedIDs map[ID]bool
	// mapped, if not nil, is the cache file that main and fan point into
	// (see indexcache.go): it must live as long as the index.
	mapped *cacheMap
	// unsorted: entries were appended to main by bulkAdd and not sorted
	// yet; finish sorts them. No lookup may run meanwhile.
	unsorted bool
	// shadowed counts the entries of main that no lookup returns: copies
	// of a blob that another entry of main also holds, and entries of
	// gone packs.
	shadowed int
}

func newIndex() *index {
	return &index{
		packIdx: make(map[ID]uint32),
		fan:     make([]uint32, 65537),
		recent:  make(map[ID]indexEntry),
		pending: make(map[ID]struct{}),
	}
}

func prefix16(id ID) int { return int(id[0])<<8 | int(id[1]) }

const blockShift = 16
const blockLen = 1 << blockShift

// at returns the entry at position pos of main.
func (x *index) at(pos int) *indexEntry { return &x.main[pos>>blockShift][pos&(blockLen-1)] }

func (x *index) find(id ID) (indexEntry, bool) {
	e, _, ok := x.findPos(id)
	return e, ok
}

// findPos returns the entry for id and its position in main, or -1 when it
// is in recent. main may hold several entries of one blob (copies in
// several packs, kept so that a pack can be left out later): of those not
// in a gone pack, findPos returns the preferred one (see better), the
// first of equals.
func (x *index) findPos(id ID) (indexEntry, int, bool) {
	k := prefix16(id)
	lo, end := int(x.fan[k]), int(x.fan[k+1])
	hi := end
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bytes.Compare(x.at(m).id[:], id[:]) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	best := -1
	for p := lo; p < end && x.at(p).id == id; p++ {
		pk := x.at(p).pack
		if x.packs[pk].gone {
			continue
		}
		if best < 0 || x.better(pk, x.at(best).pack) {
			best = p
		}
	}
	// recent holds a blob that main holds only if its copy is
	// preferred (see put).
	if e, ok := x.recent[id]; ok {
		return e, -1, true
	}
	if best >= 0 {
		return *x.at(best), best, true
	}
	return indexEntry{}, -1, false
}

// usable reports whether a writer may deduplicate against id: it is
// indexed in a pack that is not condemned.
func (x *index) usable(id ID) bool {
	e, ok := x.find(id)
	return ok && !x.packs[e.pack].condemned
}

func (x *index) ref(e indexEntry) BlobRef {
	p := x.packs[e.pack]
	t := BlobData
	if e.raw&rawPage != 0 {
		t = BlobPage
	}
	return BlobRef{Type: t, ID: e.id, Pack: p.id, PackKey: p.key, Offset: e.off, Length: e.len, RawLength: e.raw & rawMask, Compressed: e.raw&rawCompressed != 0}
}

// Lookup returns where blob id is stored.
func (x *index) Lookup(id ID) (BlobRef, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.find(id)
	if !ok {
		return BlobRef{}, false
	}
	return x.ref(e), true
}

// Has reports whether blob id is stored in a pack that is not condemned,
// so that a writer may reference it.
func (x *index) Has(id ID) bool {
	x.mu.RLock()
	ok := x.usable(id)
	x.mu.RUnlock()
	return ok
}

// Reserve reports whether the caller should store blob id: it is neither
// indexed nor reserved by another writer of this process. A reservation
// ends when a pack holding the blob is added.
func (x *index) Reserve(id ID) bool {
	x.mu.RLock()
	ok := x.usable(id)
	x.mu.RUnlock()
	if ok {
		return false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.usable(id) {
		return false
	}
	if _, ok := x.pending[id]; ok {
		return false
	}
	x.pending[id] = struct{}{}
	return true
}

// Len returns the number of indexed blobs.
func (x *index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.n - x.shadowed + len(x.recent)
}

// add indexes the blobs of a pack whose storage ModTime is mod (zero if
// unknown); a blob already indexed keeps its location unless this one is
// better (see put).
func (x *index) add(pack ID, key [keySize]byte, mod time.Time, blobs []PackedBlob) {
	x.mu.Lock()
	defer x.mu.Unlock()
	pi := x.packNum(pack, key, unixNano(mod))
	for _, b := range blobs {
		delete(x.pending, b.ID)
		x.put(pi, b, false)
	}
	if len(x.recent) > max(1<<16, x.n/8) {
		x.merge()
	}
}

// put indexes blob b of pack pi. A blob already indexed keeps its location
// unless force is set or pack pi is better (see better). Forced, the entry
// in main is overwritten, so that its position stays (gc's mark relies on
// it); otherwise main is left as it is (a cache file may back it) and the
// preferred copy goes to recent, beside the copy in main. Caller holds mu.
func (x *index) put(pi uint32, b PackedBlob, force bool) {
	e, pos, ok := x.findPos(b.ID)
	switch {
	case !ok:
		x.recent[b.ID] = entryOf(pi, b)
	case force && pos >= 0:
		*x.at(pos) = entryOf(pi, b)
	case force || x.better(pi, e.pack):
		if pos >= 0 {
			x.shadowed++ // main's copy, until the next merge
		}
		x.recent[b.ID] = entryOf(pi, b)
	}
}

// unixNano is t in Unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// better reports whether a blob's copy in pack a is preferred to its copy
// in pack b: a pack that is not condemned wins over a condemned one, then
// the newer pack by the storage's clock, then (equal times) the larger ID,
// so every process that loads the same index files prefers the same copy.
func (x *index) better(a, b uint32) bool {
	pa, pb := &x.packs[a], &x.packs[b]
	if pa.condemned != pb.condemned {
		return pb.condemned
	}
	if pa.mod == 0 || pb.mod == 0 {
		return false
	}
	if pa.mod != pb.mod {
		return pa.mod > pb.mod
	}
	return bytes.Compare(pa.id[:], pb.id[:]) > 0
}

// relocate makes the blobs of pack (just written by a repack) their
// preferred location.
func (x *index) relocate(pack ID, key [keySize]byte, blobs []PackedBlob) {
	x.mu.Lock()
	defer x.mu.Unlock()
	pi := x.packNum(pack, key, 0)
	for _, b := range blobs {
		x.put(pi, b, true)
	}
}

func (x *index) packNum(pack ID, key [keySize]byte, mod int64) uint32 {
	pi, ok := x.packPos(pack)
	if !ok {
		pi = uint32(len(x.packs))
		x.packs = append(x.packs, packRef{id: pack, key: key, mod: mod, condemned: x.condemnedIDs[pack]})
		x.packIdx[pack] = pi
	}
	return pi
}

// packPos returns pack's number, if it is known.
func (x *index) packPos(pack ID) (uint32, bool) {
	base := x.packs[:x.nBase]
	if i, ok := slices.BinarySearchFunc(base, pack, func(p packRef, id ID) int { return bytes.Compare(p.id[:], id[:]) }); ok {
		return uint32(i), true
	}
	pi, ok := x.packIdx[pack]
	return pi, ok
}

// condemn marks packs as condemned, also packs added later. Call it before
// loading index files, so that a blob's preferred copy is one that is not
// condemned.
func (x *index) condemn(packs []ID) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.condemnedIDs == nil {
		x.condemnedIDs = make(map[ID]bool, len(packs))
	}
	for _, p := range packs {
		x.condemnedIDs[p] = true
		if pi, ok := x.packPos(p); ok {
			x.packs[pi].condemned = true
		}
	}
}

// finish merges every entry added so far into the sorted array, so that
// positions (see locate) are stable until the next add.
func (x *index) finish() {
	x.mu.Lock()
	if x.unsorted {
		x.sortMain()
	}
	x.merge()
	x.mu.Unlock()
}

// positions returns how many positions locate can return: the number of
// merged entries.
func (x *index) positions() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.n
}

// locate returns blob id's position in the sorted array (valid until the
// next add; -1 for an entry added since finish) and the pack of its
// preferred copy.
func (x *index) locate(id ID) (pos int, pack ID, ok bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, pos, ok := x.findPos(id)
	if !ok {
		return 0, ID{}, false
	}
	return pos, x.packs[e.pack].id, true
}

func entryOf(pack uint32, b PackedBlob) indexEntry {
	raw := b.RawLength
	if b.Compressed {
		raw |= rawCompressed
	}
	if b.Type == BlobPage {
		raw |= rawPage
	}
	return indexEntry{id: b.ID, pack: pack, off: b.Offset, len: b.Length, raw: raw}
}

// merge folds recent into main. Caller holds mu.
func (x *index) merge() {
	if len(x.recent) == 0 {
		return
	}
	add := make([]indexEntry, 0, len(x.recent))
	for _, e := range x.recent {
		add = append(add, e)
	}
	cmp := func(a, b indexEntry) int { return bytes.Compare(a.id[:], b.id[:]) }
	slices.SortFunc(add, cmp)
	old, n := x.main, x.n
	x.main = make([][]indexEntry, 0, (n+len(add))/blockLen+1)
	x.n = 0
	cur := make([]indexEntry, 0, blockLen)
	// shadowed: entries of gone packs, and all but one copy of a blob.
	distinct := 0
	var last ID
	lastLive := false
	emit := func(e indexEntry) {
		live := !x.packs[e.pack].gone
		if x.n == 0 || e.id != last {
			last, lastLive = e.id, false
		}
		if live && !lastLive {
			distinct++
			lastLive = true
		}
		cur = append(cur, e)
		if len(cur) == blockLen {
			x.main = append(x.main, cur)
			cur = make([]indexEntry, 0, blockLen)
		}
		x.n++
	}
	i, j := 0, 0
	for i < n || j < len(add) {
		if j == len(add) || i < n && cmp(old[i>>blockShift][i&(blockLen-1)], add[j]) <= 0 {
			emit(old[i>>blockShift][i&(blockLen-1)])
			i++
			if i&(blockLen-1) == 0 {
				old[(i-1)>>blockShift] = nil // consumed: let it go
			}
		} else {
			emit(add[j])
			j++
		}
	}
	if len(cur) > 0 {
		x.main = append(x.main, cur)
	}
	x.shadowed = x.n - distinct
	// A fresh map: clear would keep the old one's buckets allocated.
	x.recent = make(map[ID]indexEntry)
	x.fan = make([]uint32, len(x.fan)) // the old one may be a cache file's
	for _, b := range x.main {
		for _, e := range b {
			x.fan[prefix16(e.id)+1]++
		}
	}
	for k := 1; k < len(x.fan); k++ {
		x.fan[k] += x.fan[k-1]
	}
}

// each calls fn for every indexed blob (its preferred copy), in no
// particular order, under a read lock: fn must not call back into the
// index.
func (x *index) each(fn func(BlobRef) error) error {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for pos := range x.n {
		e := x.at(pos)
		if x.packs[e.pack].gone {
			continue
		}
		if pos > 0 && x.at(pos-1).id == e.id || pos+1 < x.n && x.at(pos+1).id == e.id {
			if _, best, _ := x.findPos(e.id); best != pos {
				continue // another copy is preferred
			}
		}
		if err := fn(x.ref(*e)); err != nil {
			return err
		}
	}
	for _, e := range x.recent {
		if err := fn(x.ref(e)); err != nil {
			return err
		}
	}
	return nil
}

// indexPack is one pack's record in an index file.
type indexPack struct {
	ID    ID
	Key   [keySize]byte
	Blobs []PackedBlob
}

const indexVersion = 1

// encodeIndex returns the plaintext of an index file.
func encodeIndex(packs []indexPack) []byte {
	n := 0
	for _, p := range packs {
		n += 64 + binary.MaxVarintLen32 + len(p.Blobs)*(blobRecordMax+binary.MaxVarintLen32)
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen32+n)
	b = append(b, indexVersion)
	b = binary.AppendUvarint(b, uint64(len(packs)))
	for _, p := range packs {
		b = append(b, p.ID[:]...)
		b = append(b, p.Key[:]...)
		b = binary.AppendUvarint(b, uint64(len(p.Blobs)))
		for _, bl := range p.Blobs {
			b = appendBlobRecord(b, bl, true)
		}
	}
	return b
}

// decodeIndex parses the plaintext of an index file.
func decodeIndex(b []byte) ([]indexPack, error) {
	d := decoder{b: b}
	if v := d.byte("index version"); d.err == nil && v != indexVersion {
		return nil, fmt.Errorf("%w: index version %d", errFormat, v)
	}
	np := d.uvarint(uint64(len(b)/65), "pack count")
	packs := make([]indexPack, 0, np)
	for i := uint64(0); i < np && d.err == nil; i++ {
		var p indexPack
		p.ID = d.id("pack ID")
		copy(p.Key[:], d.bytes(keySize, "pack key"))
		nb := d.uvarint(uint64(len(d.b)/(1+32+4)), "blob count")
		p.Blobs = make([]PackedBlob, 0, nb)
		for j := uint64(0); j < nb && d.err == nil; j++ {
			bl := d.blobRecord(true)
			p.Blobs = append(p.Blobs, bl)
		}
		packs = append(packs, p)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("index (trailing bytes)")
	}
	if d.err != nil {
		return nil, d.err
	}
	return packs, nil
}
