// Package cpuclock measures the wall and CPU time of a section of code run
// by one goroutine, for the pipeline's stage timings.
//
// A Span locks its goroutine to its OS thread (runtime.LockOSThread) from
// Start to End and reads the thread's CPU clock at both ends, so the CPU
// time is the goroutine's own, including system time in the syscalls it
// makes, and excluding any other goroutine's. Sections must not block on
// other goroutines (channels, locks held elsewhere), which would park the
// thread; syscalls are fine. Spans nest: LockOSThread counts.
package cpuclock

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Span is a section being measured. The zero Span is not started. A Span
// belongs to the goroutine that started it.
type Span struct {
	wall   time.Time
	cpu    time.Duration
	active bool
}

// Start starts a span on the calling goroutine.
func Start() Span {
	runtime.LockOSThread()
	return Span{wall: time.Now(), cpu: Thread(), active: true}
}

// End ends the span and returns its wall and CPU time. Ending a span that
// is not active returns zeros, so End may be deferred as a safety net.
func (s *Span) End() (wall, cpu time.Duration) {
	if !s.active {
		return 0, 0
	}
	cpu = Thread() - s.cpu
	wall = time.Since(s.wall)
	s.active = false
	runtime.UnlockOSThread()
	return wall, max(cpu, 0)
}

// Thread returns the CPU time of the calling thread (user and system), or
// 0 where the clock cannot be read. It means something only on a goroutine
// locked to its thread.
func Thread() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
