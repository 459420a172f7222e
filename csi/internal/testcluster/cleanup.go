package testcluster

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// stop ends the node: the registration, the kubelet (SIGTERM, SIGKILL
// after ten seconds), then everything else in its namespaces at once
// (SIGKILL to their init); then it detaches the loop devices of the test
// driver's files, removes the kubelet's cgroups and the short directory.
// It returns what it could not clean.
func (n *node) stop() error {
	for _, l := range n.listeners {
		l.Close()
	}
	if n.reg != nil {
		n.reg.stop()
	}
	if n.kubelet != nil {
		if kids, _ := children(n.kubelet.Process.Pid); len(kids) == 1 {
			syscall.Kill(kids[0], syscall.SIGTERM)
			deadline := time.Now().Add(10 * time.Second)
			for syscall.Kill(kids[0], 0) == nil && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	if n.holder != nil {
		if n.nsInit > 0 {
			syscall.Kill(n.nsInit, syscall.SIGKILL)
		}
		n.holder.Process.Kill()
		<-n.holderDone
	}
	var errs []error
	if err := detachLoops(n.csiState); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(n.cgroupRoot); err != nil {
		errs = append(errs, err)
	}
	if n.run != "" {
		if err := os.RemoveAll(n.run); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// leftovers reports what of the node is still there after stop: mounts
// under its directories, loop devices of its files, cgroups, network
// interfaces that were not there before.
func (n *node) leftovers() error {
	var errs []error
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (strings.HasPrefix(f[4], n.dir) || (n.run != "" && strings.HasPrefix(f[4], n.run))) {
			errs = append(errs, fmt.Errorf("mount %s left", f[4]))
		}
	}
	loops, err := nodeLoops(n.csiState)
	if err != nil {
		return err
	}
	for _, d := range loops {
		errs = append(errs, fmt.Errorf("loop device %s left", d))
	}
	cgs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", n.cgroupRoot))
	for _, d := range cgs {
		errs = append(errs, fmt.Errorf("cgroup %s left", d))
	}
	ifaces, err := interfaceNames()
	if err != nil {
		return err
	}
	for _, i := range ifaces {
		if !slices.Contains(n.ifaces, i) {
			errs = append(errs, fmt.Errorf("network interface %s left", i))
		}
	}
	return errors.Join(errs...)
}

// sweepStale cleans up after nodes whose process was killed before it
// could stop them (SIGKILL, a test binary's timeout): their processes died
// with them (Pdeathsig, then the kernel's end of their PID namespace), but
// loop devices, cgroups and the short directory stay. A node's short
// directory names its cgroup root and the driver's state; it is stale once
// its holder (unshare) is gone.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "bmn*"))
	for _, run := range dirs {
		b, err := os.ReadFile(filepath.Join(run, "holder.pid"))
		if err != nil {
			continue // starting, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "unshare" {
			continue // alive
		}
		if state, err := os.ReadFile(filepath.Join(run, "csi-state")); err == nil && len(state) > 0 {
			detachLoops(string(state))
		}
		if removeCgroups("/blockmover-"+strings.TrimPrefix(filepath.Base(run), "bmn")) == nil {
			os.RemoveAll(run)
		}
	}
}

// children returns the child processes of pid.
func children(pid int) ([]int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil, err
	}
	var kids []int
	for _, f := range strings.Fields(string(b)) {
		k, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		kids = append(kids, k)
	}
	return kids, nil
}

// nodeLoops returns the loop devices whose backing file is under state (the
// test driver's) or is one of those devices: the kubelet pins a published
// block volume with a loop device of its own on the driver's. Once the
// node's mount namespace is gone the kernel can no longer name such a
// backing device node (it shows "/"), so those are matched by the device
// and inode that losetup reports. The pinning devices come first.
func nodeLoops(state string) ([]string, error) {
	out, err := exec.Command("losetup", "--list", "--json", "-O", "NAME,BACK-FILE,BACK-INO,BACK-MAJ:MIN").Output()
	if err != nil {
		return nil, fmt.Errorf("losetup --list: %w", err)
	}
	var list struct {
		Devices []struct {
			Name  string `json:"name"`
			File  string `json:"back-file"`
			Inode any    `json:"back-ino"`
			Dev   string `json:"back-maj:min"`
		} `json:"loopdevices"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("losetup --list: %w", err)
	}
	var ours, pins []string
	nodes := map[string]bool{} // "maj:min ino" of our devices' nodes
	for _, d := range list.Devices {
		if strings.HasPrefix(d.File, state+"/") {
			ours = append(ours, d.Name)
			var st syscall.Stat_t
			if err := syscall.Stat(d.Name, &st); err == nil {
				nodes[fmt.Sprintf("%d:%d %d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)] = true
			}
		}
	}
	for _, d := range list.Devices {
		if nodes[fmt.Sprintf("%s %v", strings.TrimSpace(d.Dev), d.Inode)] || slices.Contains(ours, d.File) {
			pins = append(pins, d.Name)
		}
	}
	return append(pins, ours...), nil
}

// detachLoops detaches the loop devices of nodeLoops, the kubelet's first
// (they hold the driver's open). The kernel detaches a device still in use
// (a mount of a namespace that is going away) once it is free.
func detachLoops(state string) error {
	var last error
	for range 50 {
		loops, err := nodeLoops(state)
		if err != nil {
			return err
		}
		if len(loops) == 0 {
			return nil
		}
		for _, d := range loops {
			if out, err := exec.Command("losetup", "-d", d).CombinedOutput(); err != nil {
				last = fmt.Errorf("losetup -d %s: %w: %s", d, err, out)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	loops, _ := nodeLoops(state)
	return fmt.Errorf("loop devices %v of %s still attached (last error: %v)", loops, state, last)
}

// removeCgroups removes the cgroup root under every hierarchy, deepest
// first, retrying while the killed processes leave them.
func removeCgroups(root string) error {
	var last error
	for range 50 {
		var dirs []string
		tops, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", root))
		for _, top := range tops {
			filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
		}
		if len(dirs) == 0 {
			return nil
		}
		slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = fmt.Errorf("rmdir %s: %w", d, err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("cgroups %s left (last error: %v)", root, last)
}

func interfaceNames() ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names, nil
}
