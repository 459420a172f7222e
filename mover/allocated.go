package mover

import "github.com/blockmover/blockmover/changes"

// allocatedSource is a Source whose bytes outside allocated extents are
// known to be zeros (an allocation map from changed-block tracking, e.g.
// the SnapshotMetadata service's GetMetadataAllocated).
type allocatedSource struct {
	Source
	extents changes.ChangeList
}

// WithAllocated returns src restricted to the allocated extents: the export
// reads only them and records everything else as holes, without reading
// it. The extents must be sorted and merged (changes.NewChangeList) and lie within
// src. If src has a CheckUnchanged method, the result keeps it.
func WithAllocated(src Source, allocated changes.ChangeList) Source {
	a := &allocatedSource{Source: src, extents: allocated}
	if cu, ok := src.(interface{ CheckUnchanged() error }); ok {
		return &allocatedChecked{allocatedSource: a, check: cu.CheckUnchanged}
	}
	return a
}

type allocatedChecked struct {
	*allocatedSource
	check func() error
}

func (a *allocatedChecked) CheckUnchanged() error { return a.check() }

// NextData implements chunk.Sparse.
func (a *allocatedSource) NextData(off int64) (start, end int64, err error) {
	i := a.extents.Search(off)
	if i == len(a.extents) {
		return a.Size(), a.Size(), nil
	}
	e := a.extents[i]
	return max(e.Offset, off), e.End(), nil
}
