package testdriver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Defaults of Config.
const (
	DefaultName       = "blockmover.csi.test"
	DefaultBlockSize  = 64 << 10
	DefaultMaxResults = 256
	// TopologyKey is the one topology segment of the driver: the node the
	// volume files live on.
	TopologyKey = "topology.blockmover.test/node"
)

// Config says how to run a Driver.
type Config struct {
	// StateDir holds the volume and snapshot files; required. It must be
	// on a filesystem with SEEK_DATA/SEEK_HOLE (ext4, xfs, btrfs, tmpfs).
	StateDir string
	// NodeID is the node's name and its topology value; required.
	NodeID string
	// Name is the driver name (GetPluginInfo); default DefaultName.
	Name string
	// Version is reported by GetPluginInfo; default "test".
	Version string
	// BlockSize is the granularity of GetMetadataDelta and of FIXED_LENGTH
	// metadata: a power of two from 4 KiB to 1 MiB; default 64 KiB.
	BlockSize int64
	// MetadataType of the SnapshotMetadata streams: csi.FIXED_LENGTH (one
	// entry per block, the default) or csi.VARIABLE_LENGTH (extents).
	MetadataType csi.BlockMetadataType
	// MaxResults is the number of entries per SnapshotMetadata message when
	// the caller leaves max_results at 0; default 256.
	MaxResults int32
	// Log receives one line per failed call; nil discards.
	Log *slog.Logger
}

func (c *Config) validate() error {
	if c.StateDir == "" {
		return errors.New("testdriver: missing StateDir")
	}
	if c.NodeID == "" {
		return errors.New("testdriver: missing NodeID")
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Version == "" {
		c.Version = "test"
	}
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.BlockSize < 4<<10 || c.BlockSize > sizeUnit || c.BlockSize&(c.BlockSize-1) != 0 {
		return fmt.Errorf("testdriver: BlockSize %d is not a power of two from 4 KiB to 1 MiB", c.BlockSize)
	}
	switch c.MetadataType {
	case csi.BlockMetadataType_UNKNOWN:
		c.MetadataType = csi.BlockMetadataType_FIXED_LENGTH
	case csi.BlockMetadataType_FIXED_LENGTH, csi.BlockMetadataType_VARIABLE_LENGTH:
	default:
		return fmt.Errorf("testdriver: unknown MetadataType %v", c.MetadataType)
	}
	if c.MaxResults == 0 {
		c.MaxResults = DefaultMaxResults
	}
	if c.MaxResults < 0 {
		return fmt.Errorf("testdriver: negative MaxResults %d", c.MaxResults)
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// Driver is the CSI plugin: Identity, Controller, Node and SnapshotMetadata
// services over the files in Config.StateDir.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer
	csi.UnimplementedSnapshotMetadataServer

	cfg   Config
	store store
	// mu serialises every call that changes volumes, snapshots, loop
	// devices or mounts. SnapshotMetadata streams do not take it: snapshot
	// files never change once created, and an open file outlives its
	// deletion.
	mu sync.Mutex
}

// New checks cfg and creates the state directory.
func New(cfg Config) (*Driver, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, store: store{dir: cfg.StateDir}}
	if err := d.store.init(); err != nil {
		return nil, err
	}
	return d, nil
}

// Listen opens the unix socket of endpoint ("unix:///path" or a path),
// removing a stale socket file left by an earlier run.
func Listen(endpoint string) (net.Listener, error) {
	path := strings.TrimPrefix(endpoint, "unix://")
	if path == "" || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("testdriver: endpoint %q is not unix:///absolute/path", endpoint)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	return net.Listen("unix", path)
}

// Serve serves all four services on l until ctx ends, then stops
// gracefully. It closes l.
func (d *Driver) Serve(ctx context.Context, l net.Listener) error {
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.logUnary), grpc.StreamInterceptor(d.logStream))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	csi.RegisterSnapshotMetadataServer(srv, d)
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			srv.GracefulStop()
		case <-stopped:
		}
	}()
	err := srv.Serve(l)
	close(stopped)
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

func (d *Driver) logUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if err != nil {
		d.cfg.Log.Info("call failed", "method", info.FullMethod, "err", err)
	}
	return resp, err
}

func (d *Driver) logStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := h(srv, ss)
	if err != nil {
		d.cfg.Log.Info("call failed", "method", info.FullMethod, "err", err)
	}
	return err
}

// Identity service.

func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.cfg.Name, VendorVersion: d.cfg.Version}, nil
}

func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	var caps []*csi.PluginCapability
	for _, t := range []csi.PluginCapability_Service_Type{
		csi.PluginCapability_Service_CONTROLLER_SERVICE,
		csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS,
		csi.PluginCapability_Service_SNAPSHOT_METADATA_SERVICE,
	} {
		caps = append(caps, &csi.PluginCapability{Type: &csi.PluginCapability_Service_{
			Service: &csi.PluginCapability_Service{Type: t}}})
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: caps}, nil
}

func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// topology is the one segment every volume and the node have.
func (d *Driver) topology() *csi.Topology {
	return &csi.Topology{Segments: map[string]string{TopologyKey: d.cfg.NodeID}}
}
