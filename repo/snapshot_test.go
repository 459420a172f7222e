package repo

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestCheckVolumeName: volume names that would break listings, latest:NAME
// references or file names are refused, by the library too.
func TestCheckVolumeName(t *testing.T) {
	for _, name := range []string{"pvc-data", "ns_a.pvc:1", "Datenträger", strings.Repeat("v", MaxVolumeName)} {
		if err := CheckVolumeName(name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	for _, name := range []string{"", "a/b", "/", "a\nb", "tab\there", "nul\x00", "del\x7f", "c1\u0085", strings.Repeat("v", MaxVolumeName+1), "\xff"} {
		if err := CheckVolumeName(name); !errors.Is(err, ErrInvalidVolumeName) {
			t.Errorf("%q accepted: %v", name, err)
		}
	}
	// The library refuses to write such a name.
	r, _ := newTestRepo(t)
	s := &Snapshot{Volume: "a/b", Size: 0, SegmentSize: r.Config().Chunking.SegmentSize}
	if err := r.SaveSnapshot(context.Background(), s); !errors.Is(err, ErrInvalidVolumeName) {
		t.Fatalf("saved a snapshot of volume %q: %v", s.Volume, err)
	}
}
