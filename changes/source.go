package changes

import "context"

// ExtentSource streams extents from a changed-block tracking service:
// either the ranges that changed between two snapshots, or the ranges
// allocated in one. Package csi implements it for the Kubernetes
// SnapshotMetadata service, so that changes and mover stay free of
// Kubernetes.
type ExtentSource interface {
	// Extents calls fn with each extent, in increasing offset order. An
	// error from fn stops the stream and is returned.
	Extents(ctx context.Context, fn func(Extent) error) error
}

// Extents calls fn with each extent in increasing offset order, so that a
// ChangeList is itself an ExtentSource (a file-based change list and a CBT
// service look alike to their consumer). It stops at the first error from
// fn, or when ctx is done, and returns that error.
func (cl ChangeList) Extents(ctx context.Context, fn func(Extent) error) error {
	for i, e := range cl {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
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
