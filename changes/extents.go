package changes

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// ExtentSource streams extents from a changed-block tracking service:
// either the ranges that changed between two snapshots, or the ranges
// allocated in one. Package csi implements it for the Kubernetes
// SnapshotMetadata service; mover stays free of Kubernetes.
type ExtentSource interface {
	// Extents calls fn with each extent, in increasing offset order. An
	// error from fn stops the stream and is returned.
	Extents(ctx context.Context, fn func(Extent) error) error
}

// CollectChanges reads every extent from src and returns them as a change
// list validated against a device of size bytes.
func CollectChanges(ctx context.Context, src ExtentSource, size int64) (ChangeList, error) {
	var all []Extent
	if err := src.Extents(ctx, func(e Extent) error {
		all = append(all, e)
		return nil
	}); err != nil {
		return nil, err
	}
	return NewChangeList(all, size)
}
