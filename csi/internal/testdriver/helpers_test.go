package testdriver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// needRoot skips tests that attach loop devices and mount filesystems.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices and mounts")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "blkid"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (util-linux, e2fsprogs)", tool)
		}
	}
}

// clients of one driver.
type clients struct {
	sock  string
	state string // Config.StateDir
	id    csi.IdentityClient
	ctl   csi.ControllerClient
	node  csi.NodeClient
	meta  csi.SnapshotMetadataClient
}

// startDriver serves a driver on a socket in a temp dir until the test
// ends. cfg.StateDir defaults to a symlink to a temp dir, checked for
// leftovers; cfg.NodeID defaults to "node-1".
func startDriver(t *testing.T, cfg Config) clients {
	t.Helper()
	dir := t.TempDir()
	if cfg.StateDir == "" {
		// Through a symlink: the driver must find its loop devices, whose
		// backing files the kernel names by the real path.
		real := filepath.Join(dir, "state-real")
		checkLeftovers(t, real)
		cfg.StateDir = filepath.Join(dir, "state")
		if err := os.Mkdir(real, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("state-real", cfg.StateDir); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node-1"
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
	l, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return clients{sock: sock, state: cfg.StateDir, id: csi.NewIdentityClient(conn), ctl: csi.NewControllerClient(conn),
		node: csi.NewNodeClient(conn), meta: csi.NewSnapshotMetadataClient(conn)}
}

// checkLeftovers fails the test if, when it ends, a loop device still has
// a file under stateDir, anything is mounted under the test's temp dirs,
// or a volume or snapshot file is left in stateDir. It cleans up what it
// finds, so one failure does not leak into the machine. Register it before
// anything it checks, so that it runs last.
func checkLeftovers(t *testing.T, stateDir string) {
	t.Helper()
	tmp := filepath.Dir(filepath.Dir(stateDir)) // the test's TempDir root
	t.Cleanup(func() {
		backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, p := range backing {
			b, _ := os.ReadFile(p)
			if f := strings.TrimSpace(string(b)); strings.HasPrefix(f, stateDir+"/") {
				dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(p)))
				t.Errorf("loop device %s of %s left attached", dev, f)
				exec.Command("losetup", "--detach", dev).Run()
			}
		}
		ms, err := mounts()
		if err != nil {
			t.Error(err)
		}
		for i := len(ms) - 1; i >= 0; i-- {
			if strings.HasPrefix(ms[i].Point, tmp+"/") {
				t.Errorf("%s left mounted", ms[i].Point)
				unix.Unmount(ms[i].Point, unix.MNT_DETACH)
			}
		}
		for _, sub := range []string{"volumes", "snapshots"} {
			left, _ := os.ReadDir(filepath.Join(stateDir, sub))
			for _, e := range left {
				t.Errorf("%s/%s left in the state directory", sub, e.Name())
			}
		}
	})
}

// losetupList is `losetup -a`, for messages.
func losetupList() string {
	out, _ := exec.Command("losetup", "-a").CombinedOutput()
	return string(out)
}
