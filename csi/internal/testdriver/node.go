package testdriver

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{{
		Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{
			Type: csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}},
	}}}, nil
}

func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.cfg.NodeID, AccessibleTopology: d.topology()}, nil
}

// nodeVolume checks the arguments every Node call shares and returns the
// volume's file.
func (d *Driver) nodeVolume(id, path, pathName string, c *csi.VolumeCapability) (string, error) {
	switch {
	case id == "":
		return "", status.Error(codes.InvalidArgument, "volume id missing")
	case path == "":
		return "", status.Error(codes.InvalidArgument, pathName+" missing")
	case c == nil:
		return "", status.Error(codes.InvalidArgument, "volume capability missing")
	}
	if why := checkCapability(c); why != "" {
		return "", status.Error(codes.InvalidArgument, why)
	}
	if _, err := d.store.volume(id); err != nil {
		return "", notFound(err, "volume", id)
	}
	return d.store.path(id, ".img"), nil
}

// NodeStageVolume attaches the volume's file as a loop device. For a Mount
// volume it also puts ext4 on the device if it holds no filesystem yet
// and mounts it on the staging path.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	file, err := d.nodeVolume(req.GetVolumeId(), req.GetStagingTargetPath(), "staging target path", req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	staging := req.GetStagingTargetPath()
	d.mu.Lock()
	defer d.mu.Unlock()
	before, err := loopDevices(file)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	dev, err := attach(ctx, file, false)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	mnt := req.GetVolumeCapability().GetMount()
	if mnt == nil {
		return &csi.NodeStageVolumeResponse{}, nil // Block: the device is all
	}
	flags := mnt.GetMountFlags()
	if req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY {
		flags = append(flags, "ro")
	}
	if err := d.stageFilesystem(ctx, dev, staging, flags); err != nil {
		// Leave nothing attached that no one will unstage.
		if len(before) == 0 {
			detachAll(ctx, file)
		}
		return nil, err
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

func (d *Driver) stageFilesystem(ctx context.Context, dev, staging string, flags []string) error {
	points, err := mountsOf(dev)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	m, mounted, err := mountedAt(staging)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if mounted {
		for _, p := range points {
			if p == m.Point {
				return nil // staged before
			}
		}
		return status.Errorf(codes.AlreadyExists, "staging path %s holds another mount", staging)
	}
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	typ, err := fsType(ctx, dev)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	switch typ {
	case "":
		// Lazy init keeps a sparse volume sparse; noinit_itable below
		// stops the kernel from zeroing the inode tables later, which
		// would show up as allocated blocks in the snapshots.
		if _, err := run(ctx, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", dev); err != nil {
			return status.Error(codes.Internal, err.Error())
		}
	case "ext4":
	default:
		return status.Errorf(codes.FailedPrecondition, "volume holds a %s filesystem, not ext4", typ)
	}
	opts := append([]string{"noinit_itable"}, flags...)
	if _, err := run(ctx, "mount", "-t", "ext4", "-o", strings.Join(opts, ","), dev, staging); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}

// NodeUnstageVolume unmounts the staging path and detaches the volume's
// loop devices. It succeeds for a volume that is not staged or no longer
// exists.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume id missing")
	case staging == "":
		return nil, status.Error(codes.InvalidArgument, "staging target path missing")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := unmountAll(staging); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if file := d.store.path(id, ".img"); file != "" {
		if err := detachAll(ctx, file); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume bind-mounts the staged volume on the target path: the
// loop device node on a file for Block, the staging mount on a directory
// for Mount. The driver creates the target and removes it on unpublish.
// A read-only Block publish gets a read-only loop device of its own.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	file, err := d.nodeVolume(req.GetVolumeId(), req.GetTargetPath(), "target path", req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	staging, target := req.GetStagingTargetPath(), req.GetTargetPath()
	if staging == "" {
		return nil, status.Error(codes.FailedPrecondition, "staging target path missing: the volume must be staged first")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok, err := mountedAt(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if ok {
		return &csi.NodePublishVolumeResponse{}, nil // published before
	}

	var src string
	created := false // the target, so a failure removes only what it made
	ro := req.GetReadonly() || req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	if req.GetVolumeCapability().GetBlock() != nil {
		devs, err := loopDevices(file)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if len(devs) == 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged", req.GetVolumeId())
		}
		// The staged device, or a read-only one beside it (detached on
		// unstage with the rest).
		if src, err = attach(ctx, file, ro); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o640)
		if err == nil {
			f.Close()
			created = true
		} else if !errors.Is(err, fs.ErrExist) {
			return nil, status.Error(codes.Internal, err.Error())
		}
	} else {
		if _, ok, err := mountedAt(staging); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		} else if !ok {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", req.GetVolumeId(), staging)
		}
		src = staging
		err := os.Mkdir(target, 0o750)
		if err == nil {
			created = true
		} else if !errors.Is(err, fs.ErrExist) {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	if err := bindMount(src, target, ro); err != nil {
		if created {
			os.Remove(target)
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume unmounts the target path and removes it. It
// succeeds when there is nothing to undo.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	switch {
	case req.GetVolumeId() == "":
		return nil, status.Error(codes.InvalidArgument, "volume id missing")
	case req.GetTargetPath() == "":
		return nil, status.Error(codes.InvalidArgument, "target path missing")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := unmountAll(req.GetTargetPath()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := os.Remove(req.GetTargetPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
