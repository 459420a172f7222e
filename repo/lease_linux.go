package repo

import (
	"os"
	"strings"
	"syscall"
)

// processScope identifies the machine boot and PID namespace of this
// process: a lease holder with the same host name, boot and namespace is a
// process whose liveness this process can test.
func processScope() (boot, pidns string) {
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		boot = strings.TrimSpace(string(b))
	}
	pidns, _ = os.Readlink("/proc/self/ns/pid")
	return boot, pidns
}

// processAlive reports whether pid runs (or may run: anything but ESRCH
// counts as alive).
func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) != syscall.ESRCH
}
