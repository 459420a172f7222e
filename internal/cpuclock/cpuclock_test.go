package cpuclock

import (
	"crypto/sha256"
	"os"
	"testing"
	"time"
)

func TestSpan(t *testing.T) {
	// A busy section uses about its wall time in CPU.
	s := Start()
	b := make([]byte, 1<<20)
	for range 50 {
		sum := sha256.Sum256(b)
		b[0] = sum[0]
	}
	wall, cpu := s.End()
	if cpu <= 0 || cpu > wall+time.Millisecond {
		t.Fatalf("busy section: wall %v, cpu %v", wall, cpu)
	}
	// A sleeping section uses next to none.
	s = Start()
	time.Sleep(50 * time.Millisecond)
	wall, cpu = s.End()
	if wall < 50*time.Millisecond || cpu > 10*time.Millisecond {
		t.Fatalf("sleeping section: wall %v, cpu %v", wall, cpu)
	}
	// Syscalls count: reading a file is CPU of the section.
	s = Start()
	f, err := os.Open("/proc/self/stat")
	if err == nil {
		f.Read(make([]byte, 4096))
		f.Close()
	}
	if _, cpu := s.End(); cpu <= 0 {
		t.Fatalf("a section with syscalls used %v CPU", cpu)
	}
	// Ending twice is harmless.
	if w, c := s.End(); w != 0 || c != 0 {
		t.Fatalf("second End: %v %v", w, c)
	}
}

func BenchmarkSpan(b *testing.B) {
	for b.Loop() {
		s := Start()
		s.End()
	}
}
