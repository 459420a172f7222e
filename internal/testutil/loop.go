// Package testutil is the project's shared test support: block devices
// with one policy for when none can be had. It is imported by tests only.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// LoopDevice attaches a sparse file of size bytes to a loop device and
// returns the device's path; the device is detached when the test ends.
// Where no loop device can be had (not root, no loop driver), it logs why
// and returns the sparse file itself: the code under test treats a file
// and a device alike, and a test that needs a real device calls
// BlockDevice instead.
func LoopDevice(t testing.TB, size int64) string {
	t.Helper()
	f := backingFile(t, size)
	dev, err := attach(t, f)
	if err != nil {
		t.Logf("no loop device (%v); using a regular file", err)
		return f
	}
	return dev
}

// BlockDevice is LoopDevice for a test that is about block devices
// (O_DIRECT, BLKZEROOUT, device sizes): where no loop device can be had
// it skips the test, saying why.
func BlockDevice(t testing.TB, size int64) string {
	t.Helper()
	dev, err := attach(t, backingFile(t, size))
	if err != nil {
		t.Skipf("no loop device (%v): this test needs a block device", err)
	}
	return dev
}

func backingFile(t testing.TB, size int64) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, size); err != nil {
		t.Fatal(err)
	}
	return f
}

// attach attaches f (a file, or a device for a read-only view) to a loop
// device, detached when the test ends.
func attach(t testing.TB, f string, flags ...string) (string, error) {
	t.Helper()
	args := append([]string{"--find", "--show"}, flags...)
	out, err := exec.Command("losetup", append(args, f)...).CombinedOutput()
	if err != nil {
		return "", &loopError{err: err, out: strings.TrimSpace(string(out))}
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, nil
}

// ReadOnlyLoop returns a read-only loop device over dev (a device or a
// file), detached when the test ends: how a Job sees a read-only clone.
func ReadOnlyLoop(t testing.TB, dev string) string {
	t.Helper()
	ro, err := attach(t, dev, "--read-only")
	if err != nil {
		t.Fatalf("read-only loop device over %s: %v", dev, err)
	}
	return ro
}

type loopError struct {
	err error
	out string
}

func (e *loopError) Error() string { return "losetup: " + e.err.Error() + ": " + e.out }
func (e *loopError) Unwrap() error { return e.err }
