package testdriver

import (
	"bytes"
	"context"
	"io"
	"os"
	"sort"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GetMetadataAllocated streams the data extents of the snapshot's file, as
// SEEK_DATA/SEEK_HOLE report them: whole blocks for FIXED_LENGTH, the
// extents themselves for VARIABLE_LENGTH.
func (d *Driver) GetMetadataAllocated(req *csi.GetMetadataAllocatedRequest, stream csi.SnapshotMetadata_GetMetadataAllocatedServer) error {
	if req.GetSnapshotId() == "" {
		return status.Error(codes.InvalidArgument, "snapshot id missing")
	}
	sn, f, err := d.openSnapshot(req.GetSnapshotId())
	if err != nil {
		return err
	}
	defer f.Close()
	e, err := d.newEmitter(stream.Context(), sn.Size, req.GetStartingOffset(), req.GetMaxResults(), func(bm []*csi.BlockMetadata) error {
		return stream.Send(&csi.GetMetadataAllocatedResponse{
			BlockMetadataType: d.cfg.MetadataType, VolumeCapacityBytes: sn.Size, BlockMetadata: bm})
	})
	if err != nil {
		return err
	}
	if err := dataExtents(f, e.scanStart(), sn.Size, e.add); err != nil {
		return e.fail(err)
	}
	return e.finish()
}

// GetMetadataDelta streams the blocks whose contents differ between two
// snapshots of one volume. It reads and compares every block that is data
// in either file; blocks that are holes in both are equal without reading.
func (d *Driver) GetMetadataDelta(req *csi.GetMetadataDeltaRequest, stream csi.SnapshotMetadata_GetMetadataDeltaServer) error {
	switch {
	case req.GetBaseSnapshotId() == "":
		return status.Error(codes.InvalidArgument, "base snapshot id missing")
	case req.GetTargetSnapshotId() == "":
		return status.Error(codes.InvalidArgument, "target snapshot id missing")
	}
	base, bf, err := d.openSnapshot(req.GetBaseSnapshotId())
	if err != nil {
		return err
	}
	defer bf.Close()
	target, tf, err := d.openSnapshot(req.GetTargetSnapshotId())
	if err != nil {
		return err
	}
	defer tf.Close()
	if base.SourceVolume != target.SourceVolume || base.Size != target.Size {
		return status.Errorf(codes.InvalidArgument, "snapshots %s (of %s, %d bytes) and %s (of %s, %d bytes) are not of one volume",
			base.ID, base.SourceVolume, base.Size, target.ID, target.SourceVolume, target.Size)
	}
	size := target.Size
	e, err := d.newEmitter(stream.Context(), size, req.GetStartingOffset(), req.GetMaxResults(), func(bm []*csi.BlockMetadata) error {
		return stream.Send(&csi.GetMetadataDeltaResponse{
			BlockMetadataType: d.cfg.MetadataType, VolumeCapacityBytes: size, BlockMetadata: bm})
	})
	if err != nil {
		return err
	}

	// The blocks that are data in either file, in order.
	bs := d.cfg.BlockSize
	start := e.scanStart() / bs * bs
	var blocks [][2]int64 // [first, end) block offsets, merged
	addBlocks := func(off, n int64) error {
		lo, hi := off/bs*bs, (off+n+bs-1)/bs*bs
		blocks = append(blocks, [2]int64{lo, hi})
		return nil
	}
	if err := dataExtents(bf, start, size, addBlocks); err != nil {
		return e.fail(err)
	}
	if err := dataExtents(tf, start, size, addBlocks); err != nil {
		return e.fail(err)
	}
	a, b := make([]byte, bs), make([]byte, bs)
	for _, r := range mergeRanges(blocks) {
		for off := r[0]; off < r[1]; off += bs {
			n := min(bs, size-off)
			if _, err := bf.ReadAt(a[:n], off); err != nil && err != io.EOF {
				return e.fail(err)
			}
			if _, err := tf.ReadAt(b[:n], off); err != nil && err != io.EOF {
				return e.fail(err)
			}
			if !bytes.Equal(a[:n], b[:n]) {
				if err := e.add(off, n); err != nil {
					return e.fail(err)
				}
			}
		}
	}
	return e.finish()
}

// mergeRanges sorts and merges overlapping or touching ranges.
func mergeRanges(rs [][2]int64) [][2]int64 {
	if len(rs) == 0 {
		return nil
	}
	sorted := append([][2]int64(nil), rs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i][0] < sorted[j][0] })
	out := [][2]int64{sorted[0]}
	for _, r := range sorted[1:] {
		last := &out[len(out)-1]
		if r[0] <= last[1] {
			last[1] = max(last[1], r[1])
		} else {
			out = append(out, r)
		}
	}
	return out
}

func (d *Driver) openSnapshot(id string) (*snapshot, *os.File, error) {
	sn, err := d.store.snapshot(id)
	if err != nil {
		return nil, nil, notFound(err, "snapshot", id)
	}
	f, err := os.Open(d.store.path(id, ".img"))
	if err != nil {
		return nil, nil, notFound(err, "snapshot", id)
	}
	return sn, f, nil
}

// emitter turns ranges, added in offset order, into BlockMetadata
// messages of at most max entries: one entry per block for FIXED_LENGTH,
// touching ranges merged for VARIABLE_LENGTH. It honours starting_offset:
// no entry ends at or before it, and VARIABLE_LENGTH entries start at it
// at the earliest.
type emitter struct {
	ctx   context.Context
	fixed bool
	block int64
	start int64 // starting_offset
	max   int
	send  func([]*csi.BlockMetadata) error
	buf   []*csi.BlockMetadata
	next  int64              // FIXED_LENGTH: the first block not yet emitted
	pend  *csi.BlockMetadata // VARIABLE_LENGTH: the extent still growing
	sent  bool               // at least one message went out
}

func (d *Driver) newEmitter(ctx context.Context, size, start int64, maxResults int32, send func([]*csi.BlockMetadata) error) (*emitter, error) {
	if start < 0 || start > size {
		return nil, status.Errorf(codes.OutOfRange, "starting_offset %d is outside the volume of %d bytes", start, size)
	}
	if maxResults < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "negative max_results %d", maxResults)
	}
	if maxResults == 0 {
		maxResults = d.cfg.MaxResults
	}
	return &emitter{ctx: ctx, fixed: d.cfg.MetadataType == csi.BlockMetadataType_FIXED_LENGTH,
		block: d.cfg.BlockSize, start: start, max: int(maxResults), send: send}, nil
}

// scanStart is where the caller should start looking for ranges.
func (e *emitter) scanStart() int64 {
	if e.fixed {
		return e.start / e.block * e.block
	}
	return e.start
}

func (e *emitter) add(off, n int64) error {
	if end := off + n; off < e.start {
		if end <= e.start {
			return nil
		}
		if !e.fixed {
			off, n = e.start, end-e.start
		}
	}
	if e.fixed {
		first := max(off/e.block*e.block, e.next)
		for b := first; b < off+n; b += e.block {
			if err := e.put(&csi.BlockMetadata{ByteOffset: b, SizeBytes: e.block}); err != nil {
				return err
			}
			e.next = b + e.block
		}
		return nil
	}
	if e.pend != nil && e.pend.ByteOffset+e.pend.SizeBytes == off {
		e.pend.SizeBytes += n
		return nil
	}
	if e.pend != nil {
		if err := e.put(e.pend); err != nil {
			return err
		}
	}
	e.pend = &csi.BlockMetadata{ByteOffset: off, SizeBytes: n}
	return nil
}

func (e *emitter) put(b *csi.BlockMetadata) error {
	e.buf = append(e.buf, b)
	if len(e.buf) < e.max {
		return nil
	}
	return e.flush()
}

func (e *emitter) flush() error {
	if err := e.ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if err := e.send(e.buf); err != nil {
		return err
	}
	e.buf, e.sent = nil, true
	return nil
}

// finish sends what is left; a stream always has one message, so the
// caller learns the volume's capacity even when nothing is allocated.
func (e *emitter) finish() error {
	if e.pend != nil {
		if err := e.put(e.pend); err != nil {
			return err
		}
		e.pend = nil
	}
	if len(e.buf) > 0 || !e.sent {
		return e.flush()
	}
	return nil
}

// fail turns an error of reading the files into a status.
func (e *emitter) fail(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}
