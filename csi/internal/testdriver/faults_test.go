package testdriver

import (
	"context"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestInjectedFaults: a fault file fails the next COUNT CreateSnapshot
// calls with its code, or every call while it says always; NotReady
// answers with the snapshot not ready to use.
func TestInjectedFaults(t *testing.T) {
	c := startDriver(t, Config{})
	vol := createVolume(t, c, "v", 1<<20, blockCap, nil)
	ctx := context.Background()
	snap := func(name string) error {
		_, err := c.ctl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: vol.GetVolumeId()})
		return err
	}
	if err := InjectFault(c.state, "CreateSnapshot", codes.DeadlineExceeded, 2); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := snap("s1"); status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("call %d: %v, want DeadlineExceeded", i, err)
		}
	}
	createSnapshot(t, c, "s1", vol.GetVolumeId()) // the fault is used up
	if err := InjectFault(c.state, "CreateSnapshot", codes.ResourceExhausted, -1); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := snap("s2"); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("always: %v", err)
		}
	}
	if err := ClearFault(c.state, "CreateSnapshot"); err != nil {
		t.Fatal(err)
	}
	createSnapshot(t, c, "s2", vol.GetVolumeId())

	// NotReady: the snapshot is made, and said not ready to use until the
	// fault is used up.
	if err := InjectNotReady(c.state, 1); err != nil {
		t.Fatal(err)
	}
	r, err := c.ctl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s3", SourceVolumeId: vol.GetVolumeId()})
	if err != nil || r.GetSnapshot().GetReadyToUse() {
		t.Fatalf("NotReady: %+v %v, want a snapshot not ready to use", r, err)
	}
	if s := createSnapshot(t, c, "s3", vol.GetVolumeId()); !s.GetReadyToUse() {
		t.Errorf("after the fault: %+v, want ready", s)
	}
}
