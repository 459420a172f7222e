package testdriver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// run runs a command and returns its trimmed stdout; a failure carries the
// command line and its stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// loopDevices lists the loop devices whose backing file is file, from
// /sys/block/loop*/loop/backing_file: the kernel is the record of what is
// attached, so a restarted driver finds its devices again.
func loopDevices(file string) ([]string, error) {
	dirs, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // detached meanwhile
		}
		if strings.TrimSpace(string(b)) == file {
			devs = append(devs, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(p))))
		}
	}
	return devs, nil
}

// attach returns a loop device of file, read-only or not as ro says,
// attaching one if there is none. A read-only device is what makes a
// read-only Block publish real: writes to a device node go through a
// read-only bind mount.
func attach(ctx context.Context, file string, ro bool) (string, error) {
	devs, err := loopDevices(file)
	if err != nil {
		return "", err
	}
	for _, dev := range devs {
		if readOnly(dev) == ro {
			return dev, nil
		}
	}
	args := []string{"--find", "--show", file}
	if ro {
		args = append(args, "--read-only")
	}
	return run(ctx, "losetup", args...)
}

// readOnly reports whether the loop device dev is read-only.
func readOnly(dev string) bool {
	b, err := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/ro")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// detachAll detaches every loop device of file. A device still open (a
// filesystem mounted elsewhere) is detached by the kernel on last close.
func detachAll(ctx context.Context, file string) error {
	devs, err := loopDevices(file)
	if err != nil {
		return err
	}
	for _, dev := range devs {
		if _, err := run(ctx, "losetup", "--detach", dev); err != nil {
			if again, _ := loopDevices(file); len(again) == 0 {
				return nil // gone meanwhile
			}
			return err
		}
	}
	return nil
}

// mount is one line of /proc/self/mountinfo.
type mount struct {
	Dev   uint64 // st_dev of the mounted filesystem
	Root  string // the path in that filesystem that is mounted
	Point string
}

// mounts reads /proc/self/mountinfo.
func mounts() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		majmin := strings.SplitN(fields[2], ":", 2)
		if len(majmin) != 2 {
			continue
		}
		maj, err1 := strconv.ParseUint(majmin[0], 10, 32)
		mnr, err2 := strconv.ParseUint(majmin[1], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, mount{Dev: unix.Mkdev(uint32(maj), uint32(mnr)), Root: unescape(fields[3]), Point: unescape(fields[4])})
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountedAt returns the topmost mount at path, if any.
func mountedAt(path string) (mount, bool, error) {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	ms, err := mounts()
	if err != nil {
		return mount{}, false, err
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Point == path {
			return ms[i], true, nil
		}
	}
	return mount{}, false, nil
}

// mountsOf returns the mount points of the filesystem on device dev.
func mountsOf(dev string) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, err
	}
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Dev == st.Rdev {
			out = append(out, m.Point)
		}
	}
	return out, nil
}

// unmountAll unmounts path until nothing is mounted there (a bind mount
// may have been stacked twice).
func unmountAll(path string) error {
	for {
		_, ok, err := mountedAt(path)
		if err != nil || !ok {
			return err
		}
		if err := unix.Unmount(path, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
}

// bindMount bind-mounts src on target, read-only if ro.
func bindMount(src, target string, ro bool) error {
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s on %s: %w", src, target, err)
	}
	if ro {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			unix.Unmount(target, 0)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return nil
}

// fsType returns the filesystem type blkid finds on dev, "" for none.
func fsType(ctx context.Context, dev string) (string, error) {
	out, err := exec.CommandContext(ctx, "blkid", "-p", "-s", "TYPE", "-o", "value", dev).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		return "", nil // nothing found
	}
	if err != nil {
		return "", fmt.Errorf("blkid %s: %w", dev, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// FIFREEZE and FITHAW are _IOWR('X', 119, int) and _IOWR('X', 120, int).
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// quiesce makes the volume file a consistent image while it is attached:
// a filesystem mounted from its loop device is frozen (which flushes it),
// and the loop device's own page cache is flushed. The returned function
// thaws what was frozen; calling it again does nothing.
func quiesce(file string) (thaw func(), err error) {
	var frozen []*os.File
	thaw = func() {
		for _, f := range frozen {
			unix.IoctlSetInt(int(f.Fd()), fiThaw, 0)
			f.Close()
		}
		frozen = nil
	}
	devs, err := loopDevices(file)
	if err != nil {
		return thaw, err
	}
	for _, dev := range devs {
		points, err := mountsOf(dev)
		if err != nil {
			return thaw, err
		}
		if len(points) > 0 {
			// One freeze holds the superblock, whichever mount it goes through.
			f, err := os.Open(points[0])
			if err != nil {
				return thaw, err
			}
			if err := unix.IoctlSetInt(int(f.Fd()), fiFreeze, 0); err != nil {
				f.Close()
				return thaw, fmt.Errorf("freeze %s: %w", points[0], err)
			}
			frozen = append(frozen, f)
		}
		f, err := os.Open(dev)
		if err != nil {
			return thaw, err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return thaw, fmt.Errorf("flush %s: %w", dev, err)
		}
	}
	return thaw, nil
}
