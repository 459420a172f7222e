package repo

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// TestBulkLoadSorts: entries appended from many packs in any order, with
// copies of some blobs in several packs and a pack named twice, come out
// sorted, with a correct fan-out table, each blob found at its preferred
// copy (the newer pack), and counted once.
func TestBulkLoadSorts(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := newIndex()
	var packs []indexPack
	var all []ID
	t0 := time.Unix(1_000_000, 0)
	mods := map[ID]time.Time{}
	for p := range 300 {
		var ip indexPack
		ip.ID[0], ip.ID[1] = byte(p), byte(p>>8)
		mods[ip.ID] = t0.Add(time.Duration(p) * time.Second)
		for range 1 + rng.IntN(700) {
			var id ID
			if len(all) > 0 && rng.IntN(20) == 0 {
				id = all[rng.IntN(len(all))] // a copy in a newer pack
			} else {
				for i := range id {
					id[i] = byte(rng.Uint32())
				}
				all = append(all, id)
			}
			ip.Blobs = append(ip.Blobs, PackedBlob{Type: BlobData, ID: id, Length: uint32(p)})
		}
		packs = append(packs, ip)
	}
	mod := func(id ID) time.Time { return mods[id] }
	for i := 0; i < len(packs); i += 7 {
		x.bulkAdd(packs[i:min(i+7, len(packs))], mod)
	}
	x.bulkAdd(packs[3:4], mod) // named by a second file: skipped
	x.finish()
	for p := 1; p < x.n; p++ {
		if bytes.Compare(x.at(p - 1).id[:], x.at(p).id[:]) > 0 {
			t.Fatalf("position %d out of order", p)
		}
	}
	for k := range 65536 {
		for p := x.fan[k]; p < x.fan[k+1]; p++ {
			if prefix16(x.at(int(p)).id) != k {
				t.Fatalf("fan-out table wrong at bucket %d", k)
			}
		}
	}
	newest := map[ID]uint32{}
	for p, ip := range packs {
		for _, b := range ip.Blobs {
			newest[b.ID] = uint32(p)
		}
	}
	if x.Len() != len(newest) {
		t.Fatalf("Len %d, want %d distinct blobs", x.Len(), len(newest))
	}
	for id, p := range newest {
		ref, ok := x.Lookup(id)
		if !ok || ref.Length != p {
			t.Fatalf("blob %s: found %v in the pack of length %d, want the newest copy %d", id.Short(), ok, ref.Length, p)
		}
	}
	n := 0
	x.each(func(BlobRef) error { n++; return nil })
	if n != len(newest) {
		t.Fatalf("each visited %d blobs, want %d", n, len(newest))
	}
}
