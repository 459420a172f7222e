package testdriver

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	blockCap = &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	mountCap = &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
)

// createVolume creates a volume of size bytes and deletes it when the
// test ends.
func createVolume(t *testing.T, c clients, name string, size int64, cp *csi.VolumeCapability, src *csi.VolumeContentSource) *csi.Volume {
	t.Helper()
	ctx := context.Background()
	resp, err := c.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{cp}, VolumeContentSource: src,
	})
	if err != nil {
		t.Fatalf("CreateVolume %s: %v", name, err)
	}
	id := resp.GetVolume().GetVolumeId()
	t.Cleanup(func() {
		if _, err := c.ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Errorf("DeleteVolume %s: %v", id, err)
		}
	})
	return resp.GetVolume()
}

func createSnapshot(t *testing.T, c clients, name, volID string) *csi.Snapshot {
	t.Helper()
	ctx := context.Background()
	resp, err := c.ctl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: volID})
	if err != nil {
		t.Fatalf("CreateSnapshot %s: %v", name, err)
	}
	id := resp.GetSnapshot().GetSnapshotId()
	t.Cleanup(func() {
		if _, err := c.ctl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id}); err != nil {
			t.Errorf("DeleteSnapshot %s: %v", id, err)
		}
	})
	return resp.GetSnapshot()
}

// publish stages and publishes a volume the way the kubelet does (the CO
// makes the staging directory and the target's parent) and undoes both
// when the test ends. It returns the target path.
func publish(t *testing.T, c clients, volID string, cp *csi.VolumeCapability, readonly bool) string {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	staging, target := filepath.Join(dir, "staging"), filepath.Join(dir, "publish", "pod")
	for _, p := range []string{staging, filepath.Dir(target)} {
		if err := os.MkdirAll(p, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // idempotent
		if _, err := c.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: volID, StagingTargetPath: staging, VolumeCapability: cp}); err != nil {
			t.Fatalf("NodeStageVolume: %v", err)
		}
	}
	t.Cleanup(func() {
		if _, err := c.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: volID, StagingTargetPath: staging}); err != nil {
			t.Errorf("NodeUnstageVolume: %v", err)
		}
	})
	for range 2 {
		if _, err := c.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: volID, StagingTargetPath: staging,
			TargetPath: target, VolumeCapability: cp, Readonly: readonly}); err != nil {
			t.Fatalf("NodePublishVolume: %v", err)
		}
	}
	t.Cleanup(func() {
		if _, err := c.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target}); err != nil {
			t.Errorf("NodeUnpublishVolume: %v", err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target %s still there after NodeUnpublishVolume (%v)", target, err)
		}
	})
	return target
}

// volumeFile is the backing file of a volume, for checks from outside.
func volumeFile(c clients, volID string) string {
	dir, _ := filepath.EvalSymlinks(c.state)
	return filepath.Join(dir, "volumes", volID+".img")
}

// TestNodeBlock: a staged Block volume is a loop device of its file, and
// the published path is that device: bytes written there land in the file.
func TestNodeBlock(t *testing.T) {
	needRoot(t)
	c := startDriver(t, Config{})
	ctx := context.Background()
	vol := createVolume(t, c, "pvc-block", 16<<20, blockCap, nil)
	target := publish(t, c, vol.GetVolumeId(), blockCap, false)

	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("target %s is not a block device (mode %o, %v)", target, st.Mode, err)
	}
	file := volumeFile(c, vol.GetVolumeId())
	if devs, _ := loopDevices(file); len(devs) != 1 {
		t.Fatalf("want one loop device of %s, have %v\n%s", file, devs, losetupList())
	}
	data := make([]byte, 8192)
	rand.Read(data)
	dev, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.WriteAt(data, 5<<20); err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err != nil { // last close flushes the device
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 5<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the volume file does not hold what was written to %s (%v)", target, err)
	}

	// A read-only publish is a read-only device beside the staged one:
	// the data is there, writes are refused.
	roTarget := filepath.Join(t.TempDir(), "ro")
	_, err = c.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: vol.GetVolumeId(),
		StagingTargetPath: filepath.Join(filepath.Dir(filepath.Dir(target)), "staging"), TargetPath: roTarget,
		VolumeCapability: blockCap, Readonly: true})
	if err != nil {
		t.Fatalf("read-only NodePublishVolume: %v", err)
	}
	if ro, err := os.Open(roTarget); err != nil {
		t.Error(err)
	} else {
		if _, err := ro.ReadAt(got, 5<<20); err != nil || !bytes.Equal(got, data) {
			t.Errorf("the read-only publish does not read what was written (%v)", err)
		}
		ro.Close()
	}
	// Linux opens a read-only block device for writing; the write fails.
	if rw, err := os.OpenFile(roTarget, os.O_RDWR, 0); err == nil {
		if _, err := rw.WriteAt(data, 0); err == nil {
			t.Errorf("the read-only publish %s takes writes", roTarget)
		}
		rw.Close()
	}
	if _, err := c.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: roTarget}); err != nil {
		t.Errorf("NodeUnpublishVolume: %v", err)
	}

	// A stage that fails leaves the devices of the earlier stage attached.
	before, _ := loopDevices(file)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: notDir, VolumeCapability: mountCap}); err == nil {
		t.Error("NodeStageVolume on a file succeeded")
	}
	if devs, _ := loopDevices(file); !reflect.DeepEqual(devs, before) {
		t.Errorf("after a failed stage: loop devices %v, want %v", devs, before)
	}

	// A staged volume cannot be deleted.
	_, err = c.ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.GetVolumeId()})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("DeleteVolume of a staged volume: %v, want FailedPrecondition", err)
	}
}

// TestNodeFilesystem: a Mount volume gets ext4 on first stage, is mounted
// at the staging path and bind-mounted at the target; a snapshot taken
// while it is mounted holds the file just written (the filesystem is
// frozen for the copy), and so does a clone; a read-only publish refuses
// writes.
func TestNodeFilesystem(t *testing.T) {
	needRoot(t)
	c := startDriver(t, Config{})
	ctx := context.Background()
	vol := createVolume(t, c, "pvc-fs", 64<<20, mountCap, nil)
	target := publish(t, c, vol.GetVolumeId(), mountCap, false)

	m, ok, err := mountedAt(target)
	if err != nil || !ok {
		t.Fatalf("nothing mounted at %s (%v)", target, err)
	}
	file := volumeFile(c, vol.GetVolumeId())
	devs, _ := loopDevices(file)
	if len(devs) != 1 {
		t.Fatalf("want one loop device of %s, have %v", file, devs)
	}
	if typ, err := fsType(ctx, devs[0]); err != nil || typ != "ext4" {
		t.Fatalf("%s holds %q (%v), want ext4", devs[0], typ, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(devs[0], &st); err != nil || m.Dev != st.Rdev {
		t.Fatalf("the mount at %s is not of %s (%v)", target, devs[0], err)
	}
	data := []byte("written through the published path\n")
	if err := os.WriteFile(filepath.Join(target, "hello"), data, 0o644); err != nil {
		t.Fatal(err)
	}

	// Snapshot and clone while mounted, without a sync by the writer.
	snap := createSnapshot(t, c, "snap-fs", vol.GetVolumeId())
	for name, src := range map[string]*csi.VolumeContentSource{
		"restored": {Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.GetSnapshotId()}}},
		"clone":    {Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: vol.GetVolumeId()}}},
	} {
		restored := createVolume(t, c, name, 0, mountCap, src)
		if restored.GetCapacityBytes() != vol.GetCapacityBytes() {
			t.Errorf("%s: capacity %d, want the source's %d", name, restored.GetCapacityBytes(), vol.GetCapacityBytes())
		}
		ro := publish(t, c, restored.GetVolumeId(), mountCap, true)
		if got, err := os.ReadFile(filepath.Join(ro, "hello")); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: read %q, %v; want %q", name, got, err, data)
		}
		if err := os.WriteFile(filepath.Join(ro, "new"), data, 0o644); !errors.Is(err, unix.EROFS) {
			t.Errorf("%s: write to a read-only publish: %v, want EROFS", name, err)
		}
	}
}
