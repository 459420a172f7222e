package repo

import (
	"slices"
	"testing"
)

// TestPlanCompaction: which index files gc's compaction rewrites. Every
// case but the merges keeps some file, so a plan that rewrites every file
// fails it; the killed-gc case fails the plan before this one (which let a
// pack in a small file that sorts first send a large file to the rewrite).
func TestPlanCompaction(t *testing.T) {
	const (
		large = compactBlobs / 2 // the least that is not small
		small = compactBlobs/2 - 1
	)
	pack := func(n int) ID { var id ID; id[0], id[1] = byte(n), byte(n>>8); return id }
	file := func(name string, blobs int, packs ...int) indexFileInfo {
		f := indexFileInfo{name: name, blobs: blobs}
		for _, n := range packs {
			f.packs = append(f.packs, pack(n))
		}
		return f
	}
	cases := []struct {
		name    string
		files   []indexFileInfo
		drop    []int // packs not to keep (to delete now, or missing)
		replace []string
	}{
		{name: "no files"},
		{name: "nothing changed",
			files: []indexFileInfo{file("a", large, 1, 2), file("b", compactBlobs, 3), file("c", 10, 4)}},
		{name: "one dropped pack: only its file",
			files:   []indexFileInfo{file("a", large, 1, 2), file("b", large, 3, 4), file("c", large, 5)},
			drop:    []int{3},
			replace: []string{"b"}},
		{name: "a missing pack in a small file alone",
			files:   []indexFileInfo{file("a", large, 1), file("b", 5, 2)},
			drop:    []int{2},
			replace: []string{"b"}},
		{name: "two small files merged, the large ones kept",
			files:   []indexFileInfo{file("a", small, 1), file("b", large, 2), file("c", 512, 3), file("d", compactBlobs, 4)},
			replace: []string{"a", "c"}},
		{name: "one small file alone is kept",
			files: []indexFileInfo{file("a", large, 1), file("b", 512, 2), file("c", large, 3)}},
		{name: "one small file stays while a large one is rewritten",
			files:   []indexFileInfo{file("a", large, 1, 2), file("b", 512, 3)},
			drop:    []int{2},
			replace: []string{"a"}},
		{name: "a pack in two large files: the later one",
			files:   []indexFileInfo{file("a", large, 1, 2), file("b", large, 3), file("c", large, 4, 2)},
			replace: []string{"c"}},
		{name: "a pack named twice in one file",
			files:   []indexFileInfo{file("a", large, 1), file("b", large, 2, 3, 2)},
			replace: []string{"b"}},
		{name: "killed gc: merged file written, small files not yet deleted",
			// The small files sort before and after the merged file m,
			// which names their packs: they go, m stays.
			files:   []indexFileInfo{file("a", 512, 1), file("l", large, 9), file("m", large, 1, 2, 3), file("z", 512, 2, 3)},
			replace: []string{"a", "z"}},
		{name: "a pack of a dropped file also in a kept one",
			files:   []indexFileInfo{file("a", large, 1, 2), file("b", large, 2)},
			drop:    []int{1},
			replace: []string{"a"}},
		{name: "a small file whose pack is in a rewritten file",
			files:   []indexFileInfo{file("a", large, 1, 2), file("b", 512, 2), file("c", 512, 3)},
			drop:    []int{1},
			replace: []string{"a", "b", "c"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			drop := map[ID]bool{}
			for _, n := range c.drop {
				drop[pack(n)] = true
			}
			replace, kept := planCompaction(c.files, func(id ID) bool { return !drop[id] })
			var names []string
			for _, f := range replace {
				names = append(names, f.name)
			}
			if !slices.Equal(names, c.replace) {
				t.Fatalf("rewrites %q, want %q", names, c.replace)
			}
			// kept is exactly the packs of the files left alone: the
			// rewrite writes every other pack to keep, once.
			want := map[ID]bool{}
			for _, f := range c.files {
				if !slices.Contains(c.replace, f.name) {
					for _, id := range f.packs {
						want[id] = true
					}
				}
			}
			if len(kept) != len(want) {
				t.Fatalf("kept %d packs, want %d", len(kept), len(want))
			}
			for id := range want {
				if !kept[id] {
					t.Fatalf("pack %x of a kept file not in kept", id[:2])
				}
			}
		})
	}
}
