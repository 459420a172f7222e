package testdriver

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// defaultCapacity is the size of a volume created without a capacity range
// or a source.
const defaultCapacity = 1 << 30

func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// checkCapability returns why this driver cannot serve c, "" if it can:
// Block or ext4 Mount, accessed from the one node.
func checkCapability(c *csi.VolumeCapability) string {
	switch t := c.GetAccessType().(type) {
	case *csi.VolumeCapability_Block:
	case *csi.VolumeCapability_Mount:
		if fs := t.Mount.GetFsType(); fs != "" && fs != "ext4" {
			return "filesystem " + fs + " is not supported, only ext4"
		}
	default:
		return "access type missing"
	}
	switch m := c.GetAccessMode().GetMode(); m {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
		return ""
	default:
		return "access mode " + m.String() + " is not supported: one node only"
	}
}

func checkCapabilities(cs []*csi.VolumeCapability) error {
	if len(cs) == 0 {
		return status.Error(codes.InvalidArgument, "volume capabilities missing")
	}
	for _, c := range cs {
		if why := checkCapability(c); why != "" {
			return status.Error(codes.InvalidArgument, why)
		}
	}
	return nil
}

// notFound maps a store error to NotFound or Internal.
func notFound(err error, what, id string) error {
	if errors.Is(err, fs.ErrNotExist) {
		return status.Errorf(codes.NotFound, "%s %q not found", what, id)
	}
	return status.Errorf(codes.Internal, "%s %q: %v", what, id, err)
}

// capacity works out the size of a new volume: the required bytes (or the
// source's size, or defaultCapacity) rounded up to sizeUnit, at least the
// source's size, within the limit.
func capacity(r *csi.CapacityRange, sourceSize int64) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 || lim > 0 && req > lim {
		return 0, status.Errorf(codes.InvalidArgument, "bad capacity range [%d, %d]", req, lim)
	}
	size := max(req, sourceSize)
	if size == 0 {
		size = defaultCapacity
	}
	size = (size + sizeUnit - 1) / sizeUnit * sizeUnit
	if lim > 0 && size > lim {
		return 0, status.Errorf(codes.OutOfRange, "capacity range [%d, %d] holds no multiple of 1 MiB of at least %d bytes", req, lim, max(req, sourceSize))
	}
	return size, nil
}

func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	if err := d.checkTopology(req.GetAccessibilityRequirements()); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	var source string // as recorded in volume.Source
	switch cs := req.GetVolumeContentSource(); {
	case cs.GetSnapshot() != nil:
		source = "snapshot:" + cs.GetSnapshot().GetSnapshotId()
	case cs.GetVolume() != nil:
		source = "volume:" + cs.GetVolume().GetVolumeId()
	case cs != nil:
		return nil, status.Error(codes.InvalidArgument, "unknown volume content source")
	}
	id := idFor(volumePrefix, req.GetName())
	if v, err := d.store.volume(id); err == nil {
		r := req.GetCapacityRange()
		if v.Capacity < r.GetRequiredBytes() || r.GetLimitBytes() > 0 && v.Capacity > r.GetLimitBytes() || v.Source != source {
			return nil, status.Errorf(codes.AlreadyExists, "volume %q exists with capacity %d and source %q", req.GetName(), v.Capacity, v.Source)
		}
		return d.volumeResponse(v, req.GetVolumeContentSource()), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}

	var sourceFile string
	var sourceSize int64
	if id := req.GetVolumeContentSource().GetSnapshot().GetSnapshotId(); id != "" {
		sn, err := d.store.snapshot(id)
		if err != nil {
			return nil, notFound(err, "source snapshot", id)
		}
		sourceFile, sourceSize = d.store.path(id, ".img"), sn.Size
	} else if id := req.GetVolumeContentSource().GetVolume().GetVolumeId(); id != "" {
		v, err := d.store.volume(id)
		if err != nil {
			return nil, notFound(err, "source volume", id)
		}
		sourceFile, sourceSize = d.store.path(id, ".img"), v.Capacity
	} else if source != "" {
		return nil, status.Error(codes.InvalidArgument, "volume content source without an id")
	}
	size, err := capacity(req.GetCapacityRange(), sourceSize)
	if err != nil {
		return nil, err
	}

	var src *os.File
	if sourceFile != "" {
		if src, err = os.Open(sourceFile); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		defer src.Close()
		thaw, err := quiesce(sourceFile) // a volume in use; a snapshot file is never attached
		defer thaw()
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	if err := d.store.createImage(id, src, size); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	v := &volume{ID: id, Name: req.GetName(), Capacity: size, Source: source}
	if err := d.store.save(id, v); err != nil {
		d.store.remove(id)
		return nil, status.Error(codes.Internal, err.Error())
	}
	return d.volumeResponse(v, req.GetVolumeContentSource()), nil
}

func (d *Driver) volumeResponse(v *volume, src *csi.VolumeContentSource) *csi.CreateVolumeResponse {
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:           v.ID,
		CapacityBytes:      v.Capacity,
		ContentSource:      src,
		AccessibleTopology: []*csi.Topology{d.topology()},
	}}
}

// checkTopology fails with ResourceExhausted when the requisite topology
// leaves out this node.
func (d *Driver) checkTopology(r *csi.TopologyRequirement) error {
	if len(r.GetRequisite()) == 0 {
		return nil
	}
	for _, t := range r.GetRequisite() {
		if t.GetSegments()[TopologyKey] == d.cfg.NodeID {
			return nil
		}
	}
	return status.Errorf(codes.ResourceExhausted, "requisite topology does not include %s=%s", TopologyKey, d.cfg.NodeID)
}

func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id missing")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.store.volume(id); errors.Is(err, fs.ErrNotExist) {
		return &csi.DeleteVolumeResponse{}, nil
	}
	devs, err := loopDevices(d.store.path(id, ".img"))
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if len(devs) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is still staged on %v", id, devs)
	}
	if err := d.store.remove(id); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id missing")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities missing")
	}
	if _, err := d.store.volume(id); err != nil {
		return nil, notFound(err, "volume", id)
	}
	for _, c := range req.GetVolumeCapabilities() {
		if why := checkCapability(c); why != "" {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: why}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

func (d *Driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	volID := req.GetSourceVolumeId()
	if volID == "" {
		return nil, status.Error(codes.InvalidArgument, "source volume id missing")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	notReady := false
	if err := d.injected("CreateSnapshot"); errors.Is(err, errNotReady) {
		notReady = true
	} else if err != nil {
		return nil, err
	}
	answer := func(sn *snapshot) *csi.CreateSnapshotResponse {
		r := snapshotResponse(sn)
		r.Snapshot.ReadyToUse = r.Snapshot.ReadyToUse && !notReady
		return r
	}

	id := idFor(snapshotPrefix, req.GetName())
	if sn, err := d.store.snapshot(id); err == nil {
		if sn.SourceVolume != volID {
			return nil, status.Errorf(codes.AlreadyExists, "snapshot %q exists of volume %s", req.GetName(), sn.SourceVolume)
		}
		return answer(sn), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	v, err := d.store.volume(volID)
	if err != nil {
		return nil, notFound(err, "source volume", volID)
	}

	file := d.store.path(volID, ".img")
	src, err := os.Open(file)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	defer src.Close()
	thaw, err := quiesce(file)
	defer thaw()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	created := time.Now().UTC()
	if err := d.store.createImage(id, src, v.Capacity); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	thaw() // the copy is done; the record needs no frozen volume
	sn := &snapshot{ID: id, Name: req.GetName(), SourceVolume: volID, Size: v.Capacity, Created: created}
	if err := d.store.save(id, sn); err != nil {
		d.store.remove(id)
		return nil, status.Error(codes.Internal, err.Error())
	}
	return answer(sn), nil
}

func snapshotResponse(sn *snapshot) *csi.CreateSnapshotResponse {
	return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(sn)}
}

func csiSnapshot(sn *snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     sn.ID,
		SourceVolumeId: sn.SourceVolume,
		SizeBytes:      sn.Size,
		CreationTime:   timestamppb.New(sn.Created),
		ReadyToUse:     true,
	}
}

func (d *Driver) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot id missing")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.store.snapshot(id); errors.Is(err, fs.ErrNotExist) {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	if err := d.store.remove(id); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// ListSnapshots pages through the snapshots sorted by ID; the token is the
// index of the next entry.
func (d *Driver) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, status.Error(codes.InvalidArgument, "negative max_entries")
	}
	all, err := d.store.snapshots()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	var list []*snapshot
	for _, sn := range all {
		if id := req.GetSnapshotId(); id != "" && sn.ID != id {
			continue
		}
		if id := req.GetSourceVolumeId(); id != "" && sn.SourceVolume != id {
			continue
		}
		list = append(list, sn)
	}
	start := 0
	if tok := req.GetStartingToken(); tok != "" {
		start, err = strconv.Atoi(tok)
		if err != nil || start < 0 || start > len(list) {
			return nil, status.Errorf(codes.Aborted, "starting_token %q is not valid", tok)
		}
	}
	end := len(list)
	if n := int(req.GetMaxEntries()); n > 0 && start+n < end {
		end = start + n
	}
	resp := &csi.ListSnapshotsResponse{}
	for _, sn := range list[start:end] {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: csiSnapshot(sn)})
	}
	if end < len(list) {
		resp.NextToken = strconv.Itoa(end)
	}
	return resp, nil
}
