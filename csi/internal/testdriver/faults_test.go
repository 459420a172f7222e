package testdriver

import (
	"context"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestInjectedFaults: a fault file fails the next COUNT CreateSnapshot
// calls with its code, or every call while it says always.
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
}
