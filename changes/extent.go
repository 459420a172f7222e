package changes

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Extent is a byte range of a volume: [Offset, Offset+Length).
type Extent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// End returns the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// ErrInvalidExtent is wrapped by every error about a malformed extent.
var ErrInvalidExtent = errors.New("invalid extent")

// ChangeList is a sorted list of extents that do not overlap or touch, all
// within a device: the ranges that may differ from a base snapshot.
type ChangeList []Extent

// NewChangeList validates extents against a device of size bytes, sorts
// them and merges those that overlap or touch.
func NewChangeList(extents []Extent, size int64) (ChangeList, error) {
	out := make(ChangeList, 0, len(extents))
	for _, e := range extents {
		if e.Offset < 0 || e.Length <= 0 || e.Offset > size || e.Length > size-e.Offset {
			return nil, fmt.Errorf("%w: [%d, +%d) on a device of %d bytes", ErrInvalidExtent, e.Offset, e.Length, size)
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Extent) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, e := range out {
		if n := len(merged); n > 0 && e.Offset <= merged[n-1].End() {
			merged[n-1].Length = max(merged[n-1].End(), e.End()) - merged[n-1].Offset
			continue
		}
		merged = append(merged, e)
	}
	return merged, nil
}

// The operations below are what an incremental export or import needs.
// Every method treats the receiver as read-only and assumes it is well
// formed (NewChangeList builds one; Validate checks one built by hand). A
// ChangeList is a plain slice: concurrent readers are safe, a writer needs
// its own copy.

// Validate checks that cl is a change list for a device of size bytes:
// every extent inside [0, size) with a positive length, sorted, and neither
// overlapping nor touching the one before. The error names the first bad
// extent and wraps ErrInvalidExtent.
func (cl ChangeList) Validate(size int64) error {
	for i, e := range cl {
		if e.Offset < 0 || e.Length <= 0 || e.Offset >= size || e.Length > size-e.Offset {
			return fmt.Errorf("%w: extent %d [%d, +%d) on a device of %d bytes", ErrInvalidExtent, i, e.Offset, e.Length, size)
		}
		if i > 0 && e.Offset <= cl[i-1].End() {
			return fmt.Errorf("%w: extent %d [%d, +%d) is not after extent %d [%d, +%d) with a gap (use NewChangeList to sort and merge)", ErrInvalidExtent, i, e.Offset, e.Length, i-1, cl[i-1].Offset, cl[i-1].Length)
		}
	}
	return nil
}

// Bytes returns the total length of the extents.
func (cl ChangeList) Bytes() int64 {
	var n int64
	for _, e := range cl {
		n += e.Length
	}
	return n
}

// Search returns the index of the first extent that ends after off: the
// extent that holds off if there is one, else the next one; len(cl) if no
// extent ends after off. It is a binary search.
func (cl ChangeList) Search(off int64) int {
	return sort.Search(len(cl), func(i int) bool { return cl[i].End() > off })
}

// Overlaps reports whether any byte of [off, off+length) lies in cl. An
// empty or negative range overlaps nothing.
func (cl ChangeList) Overlaps(off, length int64) bool {
	if length <= 0 {
		return false
	}
	if off < 0 { // nothing lies below 0; a positive plus a negative cannot overflow
		off, length = 0, length+off
		if length <= 0 {
			return false
		}
	}
	i := cl.Search(off)
	return i < len(cl) && cl[i].Offset-off < length
}

// Contains reports whether every byte of [off, off+length) lies in cl.
// Extents in a change list never touch, so the range must lie within one
// of them. An empty or negative range is contained in nothing.
func (cl ChangeList) Contains(off, length int64) bool {
	if length <= 0 {
		return false
	}
	i := cl.Search(off)
	return i < len(cl) && cl[i].Offset <= off && cl[i].End()-off >= length
}

// Clip returns the parts of cl within [off, off+length), for instance the
// changes inside one segment. The result is a new slice (cl is not
// modified) and is empty, but not nil, when nothing overlaps. A range that would overflow
// int64 is clipped at the largest offset.
func (cl ChangeList) Clip(off, length int64) ChangeList {
	out := ChangeList{}
	if length <= 0 {
		return out
	}
	end := off + length
	if end < off { // overflow
		end = 1<<63 - 1
	}
	for i := cl.Search(off); i < len(cl) && cl[i].Offset < end; i++ {
		s, e := max(cl[i].Offset, off), min(cl[i].End(), end)
		out = append(out, Extent{Offset: s, Length: e - s})
	}
	return out
}

// Union returns the extents in cl, in other or in both, sorted and merged.
// It takes linear time; neither argument is modified and the result shares
// no memory with them. Both must be well formed; the result is inside any
// device both are inside. The result is never nil, even when both are.
func (cl ChangeList) Union(other ChangeList) ChangeList {
	out := make(ChangeList, 0, len(cl)+len(other))
	add := func(e Extent) {
		if n := len(out); n > 0 && e.Offset <= out[n-1].End() {
			out[n-1].Length = max(out[n-1].End(), e.End()) - out[n-1].Offset
			return
		}
		out = append(out, e)
	}
	i, j := 0, 0
	for i < len(cl) || j < len(other) {
		if j == len(other) || (i < len(cl) && cl[i].Offset <= other[j].Offset) {
			add(cl[i])
			i++
		} else {
			add(other[j])
			j++
		}
	}
	return out
}

// appendMerged appends e to list, or extends the last extent when e starts
// within or just after it: input in increasing order costs no memory for
// neighbours.
func appendMerged(list []Extent, e Extent) []Extent {
	if n := len(list); n > 0 && e.Offset >= list[n-1].Offset && e.Offset <= list[n-1].End() {
		list[n-1].Length = max(list[n-1].End(), e.End()) - list[n-1].Offset
		return list
	}
	return append(list, e)
}
