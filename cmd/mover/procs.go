package main

import "runtime"

// spareProc gives the Go scheduler one more P (GOMAXPROCS) than the CPU
// workers of an export or import use, for as long as the data path runs,
// and returns the function that puts the count back. Callers fix every
// worker count from the CPUs first (cpus), so the extra P adds no worker.
//
// Why (issue 15): a goroutine that returns from a blocking system call
// needs a P to go on, and with one P per CPU both are held by workers
// that decode or compress without a pause. The import's writer, back
// from an O_DIRECT write, then waited for sysmon to preempt a worker (up
// to 10 ms) while the disk stood idle: the 4 GiB image's restore onto the
// project's ext4 disk used 1.4 of 2 cores in 2.9–3.3 s. With a spare P
// the writer's thread runs as soon as the kernel wakes it (the kernel
// shares the two cores among the three threads), and the same restore
// took 2.35–2.7 s; the export, whose uploaders write packs directly and
// whose reader waits in pread, gained 2–4%. Onto tmpfs, where the writer
// is busy copying, it made no difference either way.
//
// GOMAXPROCS is the process's, so only the command, which owns the
// process, changes it; the library leaves it alone (mover's package
// documentation says the same to other programs).
func spareProc() (restore func()) {
	n := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(n + 1)
	return func() { runtime.GOMAXPROCS(n) }
}

// cpus is the CPU budget the worker counts are taken from: GOMAXPROCS as
// the runtime set it (the CPUs, the container's CPU limit, or the
// GOMAXPROCS environment variable) before any spareProc.
func cpus() int { return runtime.GOMAXPROCS(0) }
