package csi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/blockmover/blockmover/changes"
	"github.com/kubernetes-csi/external-snapshot-metadata/pkg/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrInvalidArgs is wrapped by every error about missing or conflicting
// arguments.
var ErrInvalidArgs = errors.New("invalid arguments")

// SnapshotMetadataArgs say what to ask the SnapshotMetadata service.
type SnapshotMetadataArgs struct {
	// Client is a connected SnapshotMetadata client (TLS to the service,
	// with the CA from its SnapshotMetadataService object).
	Client api.SnapshotMetadataClient
	// SecurityToken is a ServiceAccount token with the service's audience.
	SecurityToken string
	// Namespace of the VolumeSnapshots.
	Namespace string
	// Snapshot is the VolumeSnapshot whose blocks are wanted (the target
	// of a delta).
	Snapshot string
	// BaseSnapshotID is the CSI snapshot handle of the base snapshot
	// (VolumeSnapshotContent status.snapshotHandle). Empty asks for the
	// blocks allocated in Snapshot instead of the changes.
	BaseSnapshotID string
	// MaxResults per response message; 0 lets the service choose.
	MaxResults int32
	// Resumes is how many times a broken stream is resumed from the last
	// offset received (default 5), with backoff from 100 ms.
	Resumes int
}

// Validate checks the arguments up front.
func (a *SnapshotMetadataArgs) Validate() error {
	switch {
	case a.Client == nil:
		return fmt.Errorf("%w: missing Client", ErrInvalidArgs)
	case a.SecurityToken == "":
		return fmt.Errorf("%w: missing SecurityToken", ErrInvalidArgs)
	case a.Namespace == "":
		return fmt.Errorf("%w: missing Namespace", ErrInvalidArgs)
	case a.Snapshot == "":
		return fmt.Errorf("%w: missing Snapshot", ErrInvalidArgs)
	case a.MaxResults < 0 || a.Resumes < 0:
		return fmt.Errorf("%w: negative MaxResults or Resumes", ErrInvalidArgs)
	}
	return nil
}

// SnapshotMetadata is a changed-block tracking source backed by the
// Kubernetes SnapshotMetadata service (KEP-3314): a gRPC service, served by
// the external-snapshot-metadata sidecar of a CSI driver, that streams the
// blocks allocated in a VolumeSnapshot or changed between two. It
// implements changes.ExtentSource over the service.
type SnapshotMetadata struct {
	args SnapshotMetadataArgs
	// Capacity is the volume capacity the service reported (0 before the
	// first response).
	Capacity int64
}

// NewSnapshotMetadata validates args and returns the source.
func NewSnapshotMetadata(args SnapshotMetadataArgs) (*SnapshotMetadata, error) {
	if err := args.Validate(); err != nil {
		return nil, err
	}
	if args.Resumes == 0 {
		args.Resumes = 5
	}
	return &SnapshotMetadata{args: args}, nil
}

// response is what GetMetadataDelta and GetMetadataAllocated stream.
type response interface {
	GetBlockMetadataType() api.BlockMetadataType
	GetVolumeCapacityBytes() int64
	GetBlockMetadata() []*api.BlockMetadata
}

// Extents streams the changed (or allocated) extents in offset order. A
// stream that breaks is opened again from the byte after the last extent
// received (starting_offset), up to Resumes times; extents the service sends
// again are skipped. Errors that a retry cannot fix (bad arguments, denied
// token, unknown snapshot) end it at once.
func (s *SnapshotMetadata) Extents(ctx context.Context, fn func(changes.Extent) error) error {
	var next int64 // the byte after the last extent delivered
	resumes := 0
	for {
		err := s.stream(ctx, next, func(e changes.Extent) error {
			if e.End() <= next {
				return nil // sent again after a resume
			}
			if e.Offset < next {
				e = changes.Extent{Offset: next, Length: e.End() - next}
			}
			next = e.End()
			return fn(e)
		})
		if err == nil {
			return nil
		}
		var fnErr *callbackError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		if ctx.Err() != nil || !resumable(err) || resumes >= s.args.Resumes {
			return fmt.Errorf("snapshot metadata of %s/%s: %w", s.args.Namespace, s.args.Snapshot, err)
		}
		resumes++
		t := time.NewTimer(time.Duration(resumes) * 100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// callbackError carries an error returned by the caller's fn.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// resumable reports whether a broken stream is worth resuming.
func resumable(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied, codes.NotFound,
		codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented, codes.Canceled:
		return false
	}
	return true
}

// stream runs one call from offset and hands each extent to fn.
func (s *SnapshotMetadata) stream(ctx context.Context, offset int64, fn func(changes.Extent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var recv func() (response, error)
	if s.args.BaseSnapshotID == "" {
		st, err := s.args.Client.GetMetadataAllocated(ctx, &api.GetMetadataAllocatedRequest{
			SecurityToken: s.args.SecurityToken, Namespace: s.args.Namespace,
			SnapshotName: s.args.Snapshot, StartingOffset: offset, MaxResults: s.args.MaxResults,
		})
		if err != nil {
			return err
		}
		recv = func() (response, error) { return st.Recv() }
	} else {
		st, err := s.args.Client.GetMetadataDelta(ctx, &api.GetMetadataDeltaRequest{
			SecurityToken: s.args.SecurityToken, Namespace: s.args.Namespace,
			BaseSnapshotId: s.args.BaseSnapshotID, TargetSnapshotName: s.args.Snapshot,
			StartingOffset: offset, MaxResults: s.args.MaxResults,
		})
		if err != nil {
			return err
		}
		recv = func() (response, error) { return st.Recv() }
	}
	for {
		resp, err := recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if c := resp.GetVolumeCapacityBytes(); c <= 0 || s.Capacity != 0 && c != s.Capacity {
			return status.Errorf(codes.FailedPrecondition, "service reported volume capacity %d after %d", c, s.Capacity)
		}
		s.Capacity = resp.GetVolumeCapacityBytes()
		for _, b := range resp.GetBlockMetadata() {
			if b.GetByteOffset() < 0 || b.GetSizeBytes() <= 0 || b.GetByteOffset() > s.Capacity-b.GetSizeBytes() {
				return status.Errorf(codes.OutOfRange, "service sent extent [%d, +%d) on a volume of %d bytes", b.GetByteOffset(), b.GetSizeBytes(), s.Capacity)
			}
			if err := fn(changes.Extent{Offset: b.GetByteOffset(), Length: b.GetSizeBytes()}); err != nil {
				return &callbackError{err}
			}
		}
	}
}
