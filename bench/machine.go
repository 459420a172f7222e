package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Machine describes where a benchmark ran.
type Machine struct {
	Hostname string `json:"hostname"`
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	// Virtual is true when the CPU reports a hypervisor.
	Virtual   bool   `json:"virtual"`
	MemoryGiB int    `json:"memory_gib"`
	Kernel    string `json:"kernel"`
	OS        string `json:"os"`
	Go        string `json:"go"`
	// Mover is the measured mover's version (Config.MoverVersion).
	Mover string `json:"mover"`
	// LoadBefore and LoadAfter are the 1-minute load averages around the
	// benchmark: a busy machine gives numbers that do not compare.
	LoadBefore float64 `json:"load_before"`
	LoadAfter  float64 `json:"load_after"`
}

// String describes the machine in one line.
func (m Machine) String() string {
	virt := ""
	if m.Virtual {
		virt = ", virtual machine"
	}
	return fmt.Sprintf("%d cores (%s%s), %d GiB RAM, %s, Linux %s, %s, mover %s", m.CPUs, m.CPUModel, virt, m.MemoryGiB, m.OS, m.Kernel, m.Go, m.Mover)
}

// machineInfo describes this machine; version is the mover's, from the
// caller's build information ("": the checkout's, if any). The load
// averages are the caller's to read.
func machineInfo(ctx context.Context, version string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Mover: "unknown"}
	if version != "" {
		m.Mover = version
	}
	m.Hostname, _ = os.Hostname()
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			switch {
			case !ok:
			case k == "model name" && m.CPUModel == "":
				m.CPUModel = v
			case k == "flags" && slices.Contains(strings.Fields(v), "hypervisor"):
				m.Virtual = true
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				m.MemoryGiB = int((kb + 1<<19) >> 20)
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	m.OS = "Linux"
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if m.Mover == "unknown" {
		m.Mover = gitRevision(ctx)
	}
	return m
}

// gitRevision describes the checkout in the working directory when it is
// blockmover's (a binary built with -buildvcs=false carries no revision).
func gitRevision(ctx context.Context) string {
	if b, err := os.ReadFile("go.mod"); err != nil || !strings.Contains(string(b), "module github.com/blockmover/blockmover\n") {
		return "unknown"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty=+dirty", "--abbrev=12").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// fsType names the file system that holds path, or "block device".
func fsType(path string) string {
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeDevice != 0 {
		return "block device"
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "unknown"
	}
	switch uint32(st.Type) {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x01021994:
		return "tmpfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794C7630:
		return "overlayfs"
	case 0x6969:
		return "nfs"
	case 0x2FC12FC1:
		return "zfs"
	case 0xF2F52010:
		return "f2fs"
	case 0xFE534D42, 0xFF534D42:
		return "smb"
	}
	return fmt.Sprintf("fs type %#x", uint32(st.Type))
}

// usage is a process's resource use: CPU seconds and peak resident memory.
type usage struct {
	user, sys time.Duration
	maxRSS    int64 // bytes
}

// cpuOf reads the CPU times of a rusage. Its ru_maxrss is not used: a
// child started by Go (vfork, sharing the parent's memory until exec)
// inherits the parent's high-water mark in it, so peak memory comes from
// the process's own VmHWM instead (see peakRSS).
func cpuOf(ru *syscall.Rusage) usage {
	return usage{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
}

// selfUsage is this process's resource use so far.
func selfUsage() usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}
	}
	u := cpuOf(&ru)
	u.maxRSS = peakRSS("self")
	return u
}

// peakRSS returns the peak resident memory in bytes (VmHWM) of a process
// ("self" or a pid), 0 if it cannot be read (it exited).
func peakRSS(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// watchPeakRSS polls a running process's VmHWM every 10 ms; the function
// it returns stops polling and returns the highest value seen. Growth in
// the last 10 ms of the process's life can be missed.
func watchPeakRSS(pid int) func() int64 {
	stop := make(chan struct{})
	done := make(chan int64)
	go func() {
		id := strconv.Itoa(pid)
		peak := peakRSS(id)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
				peak = max(peak, peakRSS(id))
			}
		}
	}()
	return func() int64 {
		close(stop)
		return <-done
	}
}

// Stat is a figure over the runs: median, minimum and maximum.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func statOf(v []float64) Stat {
	if len(v) == 0 {
		return Stat{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: m, Min: s[0], Max: s[len(s)-1]}
}
