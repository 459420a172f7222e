package csi

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/internal/testutil"
	"github.com/blockmover/blockmover/mover"
	"github.com/kubernetes-csi/external-snapshot-metadata/pkg/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// metadataServer is a real SnapshotMetadata gRPC service over a socket. It
// computes deltas and allocations from real devices (loop devices, or
// files where none can be had): snapshots are device paths by name, as a
// CSI driver would map snapshot handles to its storage. It stands for the
// csi-snapshot-metadata sidecar in the client's own tests, which need what
// the real sidecar cannot be made to do: a stream that breaks midway (the
// resume from the last offset), and a refusal with a chosen code. The
// real sidecar serves TestCBTInCluster and TestIncrementalExport.
type metadataServer struct {
	api.UnimplementedSnapshotMetadataServer
	token     string
	devices   map[string]string // snapshot name or handle → device path
	breakOnce atomic.Int32      // break the stream after this many messages, once
	calls     atomic.Int32
	offsets   []int64 // starting_offset of each call
}

func (m *metadataServer) open(name string) (*mover.Device, error) {
	p, ok := m.devices[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "snapshot %q not found", name)
	}
	return mover.OpenSource(p, false)
}

func (m *metadataServer) send(ctx context.Context, extents changes.ChangeList, capacity, start int64, max int32, sendMsg func([]*api.BlockMetadata) error) error {
	if max <= 0 {
		max = 16
	}
	var batch []*api.BlockMetadata
	msgs := int32(0)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if b := m.breakOnce.Load(); b > 0 && msgs == b && m.breakOnce.CompareAndSwap(b, 0) {
			return status.Error(codes.Unavailable, "connection to the CSI driver lost")
		}
		msgs++
		err := sendMsg(batch)
		batch = nil
		return err
	}
	for _, e := range extents {
		if e.End() <= start {
			continue
		}
		batch = append(batch, &api.BlockMetadata{ByteOffset: e.Offset, SizeBytes: e.Length})
		if int32(len(batch)) == max {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

func (m *metadataServer) GetMetadataDelta(req *api.GetMetadataDeltaRequest, stream grpc.ServerStreamingServer[api.GetMetadataDeltaResponse]) error {
	m.calls.Add(1)
	m.offsets = append(m.offsets, req.StartingOffset)
	if req.SecurityToken != m.token {
		return status.Error(codes.Unauthenticated, "invalid security token")
	}
	if req.Namespace != "ns" {
		return status.Errorf(codes.PermissionDenied, "namespace %q", req.Namespace)
	}
	base, err := m.open(req.BaseSnapshotId)
	if err != nil {
		return err
	}
	defer base.Close()
	target, err := m.open(req.TargetSnapshotName)
	if err != nil {
		return err
	}
	defer target.Close()
	changed, err := changes.Diff(stream.Context(), base, target, changes.DiffOptions{BlockSize: 4096})
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return m.send(stream.Context(), changed, target.Size(), req.StartingOffset, req.MaxResults, func(b []*api.BlockMetadata) error {
		return stream.Send(&api.GetMetadataDeltaResponse{BlockMetadataType: api.BlockMetadataType_VARIABLE_LENGTH, VolumeCapacityBytes: target.Size(), BlockMetadata: b})
	})
}

func (m *metadataServer) GetMetadataAllocated(req *api.GetMetadataAllocatedRequest, stream grpc.ServerStreamingServer[api.GetMetadataAllocatedResponse]) error {
	m.calls.Add(1)
	if req.SecurityToken != m.token {
		return status.Error(codes.Unauthenticated, "invalid security token")
	}
	dev, err := m.open(req.SnapshotName)
	if err != nil {
		return err
	}
	defer dev.Close()
	// Allocated = differs from an all-zero device of the same size.
	zero := filepath.Join(os.TempDir(), "zero-"+req.SnapshotName)
	if err := os.WriteFile(zero, nil, 0o600); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	defer os.Remove(zero)
	os.Truncate(zero, dev.Size())
	z, err := mover.OpenSource(zero, false)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	defer z.Close()
	alloc, err := changes.Diff(stream.Context(), z, dev, changes.DiffOptions{BlockSize: 4096})
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return m.send(stream.Context(), alloc, dev.Size(), req.StartingOffset, req.MaxResults, func(b []*api.BlockMetadata) error {
		return stream.Send(&api.GetMetadataAllocatedResponse{BlockMetadataType: api.BlockMetadataType_VARIABLE_LENGTH, VolumeCapacityBytes: dev.Size(), BlockMetadata: b})
	})
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Sync()
}

func serve(t *testing.T, srv *metadataServer) api.SnapshotMetadataClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	api.RegisterSnapshotMetadataServer(g, srv)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return api.NewSnapshotMetadataClient(conn)
}

// TestSnapshotMetadataDelta: the client against a real gRPC server that
// computes the delta of two real devices, with a stream that breaks midway
// and is resumed from the last offset received.
func TestSnapshotMetadataDelta(t *testing.T) {
	const size = 16 << 20
	base := testutil.LoopDevice(t, size)
	target := testutil.LoopDevice(t, size)
	data := bytes.Repeat([]byte("blockmover"), size/10+1)[:size]
	writeAt(t, base, 0, data)
	var want []changes.Extent
	for i := range 40 {
		off := int64(i)*400_000 + 12_288
		data[off] ^= 0xff
		want = append(want, changes.Extent{Offset: off / 4096 * 4096, Length: 4096})
	}
	writeAt(t, target, 0, data)

	srv := &metadataServer{token: "tok", devices: map[string]string{"snap-handle-1": base, "snap-2": target}}
	srv.breakOnce.Store(2) // after two messages of 4
	client := serve(t, srv)
	sm, err := NewSnapshotMetadata(SnapshotMetadataArgs{Client: client, SecurityToken: "tok", Namespace: "ns",
		Snapshot: "snap-2", BaseSnapshotID: "snap-handle-1", MaxResults: 4})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := changes.CollectChanges(context.Background(), sm, size)
	if err != nil {
		t.Fatal(err)
	}
	if srv.calls.Load() != 2 || srv.offsets[1] != want[7].End() {
		t.Fatalf("the broken stream was not resumed from the last offset: calls %d, offsets %v", srv.calls.Load(), srv.offsets)
	}
	if len(cl) != len(want) {
		t.Fatalf("got %d extents, want %d", len(cl), len(want))
	}
	for i := range want {
		if cl[i] != want[i] {
			t.Fatalf("extent %d: %v, want %v", i, cl[i], want[i])
		}
	}
	if sm.Capacity != size {
		t.Fatalf("capacity %d", sm.Capacity)
	}

	// Errors that a retry cannot fix end at once, with the service's word.
	for _, tc := range []struct {
		args SnapshotMetadataArgs
		code codes.Code
	}{
		{SnapshotMetadataArgs{Client: client, SecurityToken: "stolen", Namespace: "ns", Snapshot: "snap-2", BaseSnapshotID: "snap-handle-1"}, codes.Unauthenticated},
		{SnapshotMetadataArgs{Client: client, SecurityToken: "tok", Namespace: "ns", Snapshot: "nope", BaseSnapshotID: "snap-handle-1"}, codes.NotFound},
	} {
		calls := srv.calls.Load()
		sm, _ := NewSnapshotMetadata(tc.args)
		_, err := changes.CollectChanges(context.Background(), sm, size)
		if status.Code(errors.Unwrap(err)) != tc.code && !strings.Contains(err.Error(), tc.code.String()) {
			t.Fatalf("want %v, got %v", tc.code, err)
		}
		if srv.calls.Load() != calls+1 {
			t.Fatalf("a %v error was retried", tc.code)
		}
	}
	if _, err := NewSnapshotMetadata(SnapshotMetadataArgs{Client: client, Namespace: "ns", Snapshot: "s"}); !errors.Is(err, ErrInvalidArgs) {
		t.Fatalf("missing token: %v", err)
	}
}

// TestSnapshotMetadataAllocatedExport: a full export that reads only the
// allocated ranges the service reports, and still yields the plain export's
// chunk list.
func TestSnapshotMetadataAllocated(t *testing.T) {
	const size = 8 << 20
	dev := testutil.LoopDevice(t, size)
	writeAt(t, dev, 1<<20, bytes.Repeat([]byte{7}, 300_000))
	writeAt(t, dev, 6<<20, []byte("x"))
	srv := &metadataServer{token: "tok", devices: map[string]string{"snap": dev}}
	sm, err := NewSnapshotMetadata(SnapshotMetadataArgs{Client: serve(t, srv), SecurityToken: "tok", Namespace: "ns", Snapshot: "snap"})
	if err != nil {
		t.Fatal(err)
	}
	alloc, err := changes.CollectChanges(context.Background(), sm, size)
	if err != nil {
		t.Fatal(err)
	}
	if alloc.Bytes() != 303104+4096 || len(alloc) != 2 {
		t.Fatalf("allocated: %v (%d bytes)", alloc, alloc.Bytes())
	}
}
