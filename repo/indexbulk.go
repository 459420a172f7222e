package repo

import (
	"bytes"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Loading many index files at once: each file is decoded, decrypted and
// checked by its own goroutine, without a lock; its entries are then
// appended to the unsorted array under the index's lock, a copy of a few
// kilobytes per file. finish sorts the array once, in place (a radix pass
// on the first two bytes of the ID, then a sort within each of the 65,536
// buckets, spread over the cores), so loading costs no map and no second
// copy of the entries: memory stays at 48 bytes per entry plus what the
// files being decoded hold.

// bulkAdd appends the blobs of packs to the unsorted array; mod gives
// each pack's ModTime. A pack already indexed (named by another index
// file too, or held by a cache file) is skipped: a pack never changes.
// Call finish before any lookup.
func (x *index) bulkAdd(packs []indexPack, mod func(ID) time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.unsorted = true
	for _, p := range packs {
		if _, ok := x.packPos(p.ID); ok {
			continue
		}
		pi := x.packNum(p.ID, p.Key, unixNano(mod(p.ID)))
		for _, b := range p.Blobs {
			x.appendMain(entryOf(pi, b))
		}
	}
}

// addPacks indexes the blobs of packs one by one (see add), skipping
// packs already indexed: for a few files on top of a cache's sorted array,
// which it leaves as it is.
func (x *index) addPacks(packs []indexPack, mod func(ID) time.Time) {
	for _, p := range packs {
		if !x.knows(p.ID) {
			x.add(p.ID, p.Key, mod(p.ID), p.Blobs)
		}
	}
}

// knows reports whether pack is indexed.
func (x *index) knows(pack ID) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	_, ok := x.packPos(pack)
	return ok
}

// baseBlobs returns how many entries a cache file holds of pack, if it is
// one of the cache's packs.
func (x *index) baseBlobs(pack ID) (int, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	pi, ok := x.packPos(pack)
	if !ok || int(pi) >= x.nBase {
		return 0, false
	}
	return int(x.packs[pi].blobs), true
}

// appendMain appends e to main, unsorted. Caller holds mu.
func (x *index) appendMain(e indexEntry) {
	if x.n&(blockLen-1) == 0 {
		x.main = append(x.main, make([]indexEntry, 0, blockLen))
	}
	last := len(x.main) - 1
	x.main[last] = append(x.main[last], e)
	x.n++
}

// sortMain sorts main by ID in place, rebuilds the fan-out table, and
// counts the copies of blobs that other entries shadow. Caller holds mu.
func (x *index) sortMain() {
	x.unsorted = false
	// Two in-place radix passes (American flag sort): on the first byte
	// of the ID, then, in parallel, on the second byte within each of
	// the 256 buckets; every swap puts one entry into its bucket for
	// good, and 256 write cursors stay in the CPU's cache.
	var top [257]uint32
	x.flagPass(0, x.n, 0, top[:])
	fan := make([]uint32, 65537)
	workers := runtime.GOMAXPROCS(0)
	parallel(workers, 256, func(j int) {
		x.flagPass(int(top[j]), int(top[j+1]), 1, fan[j<<8:j<<8+257])
	})
	fan[65536] = uint32(x.n)
	x.fan = fan
	// Sort within the 65,536 buckets, split among the cores.
	shadowed := make([]int, 256)
	parallel(workers, 256, func(j int) {
		var tmp []indexEntry
		for k := j << 8; k < (j+1)<<8; k++ {
			lo, hi := int(x.fan[k]), int(x.fan[k+1])
			tmp = x.sortRange(lo, hi, tmp)
			for p := lo + 1; p < hi; p++ {
				if x.at(p).id == x.at(p-1).id {
					shadowed[j]++
				}
			}
		}
	})
	for _, n := range shadowed {
		x.shadowed += n
	}
}

// flagPass permutes main[lo:hi) in place so that its entries are grouped
// by byte b of their ID, in order, and sets bounds[v] to the position
// where the entries with byte value v start (bounds has 257 entries; the
// last is left alone unless it is free to set).
func (x *index) flagPass(lo, hi, b int, bounds []uint32) {
	var counts [256]uint32
	for p := lo; p < hi; p++ {
		counts[x.at(p).id[b]]++
	}
	var next [256]uint32
	pos := uint32(lo)
	for v := range 256 {
		bounds[v], next[v] = pos, pos
		pos += counts[v]
	}
	for v := range 256 {
		end := bounds[v] + counts[v]
		for next[v] < end {
			e := x.at(int(next[v]))
			d := e.id[b]
			if int(d) == v {
				next[v]++
				continue
			}
			o := x.at(int(next[d]))
			*e, *o = *o, *e
			next[d]++
		}
	}
	if b == 0 {
		bounds[256] = uint32(hi)
	}
}

// parallel calls fn(i) for every i in [0, n) on workers goroutines.
func parallel(workers, n int, fn func(i int)) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

func cmpEntry(a, b indexEntry) int { return bytes.Compare(a.id[:], b.id[:]) }

// sortRange sorts main[lo:hi) by ID, through tmp when the range spans two
// blocks, and returns tmp for reuse.
func (x *index) sortRange(lo, hi int, tmp []indexEntry) []indexEntry {
	if hi-lo < 2 {
		return tmp
	}
	if lo>>blockShift == (hi-1)>>blockShift {
		b := x.main[lo>>blockShift]
		slices.SortFunc(b[lo&(blockLen-1):(hi-1)&(blockLen-1)+1], cmpEntry)
		return tmp
	}
	tmp = tmp[:0]
	for p := lo; p < hi; p++ {
		tmp = append(tmp, *x.at(p))
	}
	slices.SortFunc(tmp, cmpEntry)
	for i, e := range tmp {
		*x.at(lo + i) = e
	}
	return tmp
}
