package testcluster

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// startNode starts a cluster with the node, skipping the test when the
// binaries are not built or the test is not root, and checks in t.Cleanup
// that Stop leaves no process, mount, loop device, cgroup or network
// interface behind.
func startNode(t *testing.T) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a control plane and a kubelet")
	}
	if os.Geteuid() != 0 {
		t.Skip("the kubelet, containerd and the test CSI driver need root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := StartWith(ctx, t.TempDir(), Options{Kubelet: true})
	switch {
	case errors.Is(err, ErrNoClusterTools):
		t.Skipf("%v", err) // names make cluster-tools
	case errors.Is(err, ErrNoBinaries) && os.Getenv(SkipEnv) == "1":
		t.Skipf("%v", err)
	case err != nil:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs:\n%s", c.Logs())
		}
		pids := c.PIDs()
		c.Stop()
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process %d still there after Stop (kill 0: %v)", pid, err)
			}
		}
		if err := c.Leftovers(); err != nil {
			t.Errorf("after Stop: %v", err)
		}
	})
	return c
}

func TestKubelet(t *testing.T) {
	c := startNode(t)
	_ = c
}
