package units

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"4096", 4096},
		{" 4096 ", 4096},
		{"512B", 512},
		{"16Ki", 16 << 10},
		{"16KiB", 16 << 10},
		{"64Mi", 64 << 20},
		{"64MiB", 64 << 20},
		{"10Gi", 10 << 30},
		{"10GiB", 10 << 30},
		{"2Ti", 2 << 40},
		{"1Ei", 1 << 60},
		{"1.5Gi", 3 << 29},
		{"16k", 16000},
		{"16K", 16000},
		{"16kB", 16000},
		{"16KB", 16000},
		{"16M", 16e6},
		{"16MB", 16e6},
		{"10G", 10e9},
		{"10GB", 10e9},
		{"3T", 3e12},
		{"9E", 9e18},
		{"0.5k", 500},
		{".5k", 500},
		{"12 MiB", 12 << 20}, // as Bytes prints it
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseSizeRefuses(t *testing.T) {
	for _, tc := range []struct {
		in   string
		hint string
	}{
		{"", "want e.g."},
		{"-1", "want e.g."},
		{"16m", "16Mi"},
		{"16mb", "16M"},
		{"16kib", "spelled Ki"},
		{"16gi", "spelled Ki"},
		{"1.1Gi", "whole number"},
		{"0.5", "whole number"},
		{"10Ei", "larger than"},
		{"1.2.3M", "not a number"},
		{"GiB", "want e.g."},
		{"1e9", "want e.g."},
		{"1x", "want e.g."},
	} {
		_, err := ParseSize(tc.in)
		if err == nil || !errors.Is(err, ErrSize) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("ParseSize(%q) = %v; want an ErrSize naming %q", tc.in, err, tc.hint)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseSize(%q): error is not one line: %q", tc.in, err)
		}
	}
}

// TestParseSizeAgreesWithKubernetes: where a size is also a Kubernetes
// quantity, both read it as the same number of bytes, so `--size 10Gi`
// means to mover what it means to a PVC.
func TestParseSizeAgreesWithKubernetes(t *testing.T) {
	for _, s := range []string{
		"0", "1", "4096", "1Ki", "16Ki", "512Mi", "10Gi", "1.5Gi", "3Ti", "1Pi", "7Ei",
		"1k", "250k", "16M", "10G", "4T", "2P", "9E", "0.5k", "2.25M",
	} {
		q, err := resource.ParseQuantity(s)
		if err != nil {
			t.Fatalf("resource.ParseQuantity(%q): %v", s, err)
		}
		got, err := ParseSize(s)
		if err != nil || got != q.Value() {
			t.Errorf("ParseSize(%q) = %d, %v; Kubernetes reads %d", s, got, err, q.Value())
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"4096", "10Gi", "1.5GiB", "16M", "16m", "0.5k", "99999999999999999999Ei", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, ErrSize) {
				t.Fatalf("ParseSize(%q): error %v does not wrap ErrSize", s, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d < 0", s, n)
		}
		// What Size prints, ParseSize reads back.
		if back, err := ParseSize(Size(n)); err != nil || back != n {
			t.Fatalf("Size(%d) = %q reads back as %d, %v", n, Size(n), back, err)
		}
	})
}

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1 KiB"}, {1536, "1.5 KiB"},
		{64 << 20, "64 MiB"}, {4<<30 + 1<<29, "4.5 GiB"}, {3 << 40, "3 TiB"},
		{5 << 50, "5 PiB"}, {2 << 60, "2 EiB"}, {-2048, "-2 KiB"}, {1<<30 - 1, "1.0 GiB"},
	} {
		if got := Bytes(tc.n); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0"}, {4097, "4097"}, {4096, "4Ki"}, {16 << 20, "16Mi"}, {1536 << 10, "1536Ki"}, {1 << 30, "1Gi"}} {
		if got := Size(tc.n); got != tc.want {
			t.Errorf("Size(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestRate(t *testing.T) {
	if got := Rate(5 << 20); got != "5.0 MiB/s" {
		t.Errorf("Rate(5 MiB/s) = %q", got)
	}
	if got := Rate(300 << 20); got != "300 MiB/s" {
		t.Errorf("Rate(300 MiB/s) = %q", got)
	}
	if got := MiBps(512<<20, 2*time.Second); got != 256 {
		t.Errorf("MiBps = %v, want 256", got)
	}
	if got := MiBps(1, 0); got != 0 {
		t.Errorf("MiBps over no time = %v, want 0", got)
	}
}

func TestPlural(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{{0, "0 snapshots"}, {1, "1 snapshot"}, {2, "2 snapshots"}} {
		if got := Plural(tc.n, "snapshot"); got != tc.want {
			t.Errorf("Plural(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	if got := Plural(3, "index", "indexes"); got != "3 indexes" {
		t.Errorf("irregular plural: %q", got)
	}
}

func TestTime(t *testing.T) {
	tm := time.Date(2026, 12, 3, 14, 5, 9, 123, time.FixedZone("X", 3600))
	got := Time(tm)
	back, err := time.Parse(TimeLayout, got)
	if err != nil || !back.Equal(tm.Truncate(time.Second)) {
		t.Errorf("Time = %q reads back as %v, %v", got, back, err)
	}
}
