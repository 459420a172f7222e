package changes_test

import (
	"context"
	"testing"

	"github.com/blockmover/blockmover/changes"
)

// TestDiffBounds: options that would allocate without bound are refused,
// and a small device gets small buffers whatever the read size.
func TestDiffBounds(t *testing.T) {
	ctx := context.Background()
	img := &memSource{b: make([]byte, 4096)}
	for _, o := range []changes.DiffOptions{{BlockSize: 1 << 40}, {ReadSize: 1 << 40}} {
		if _, err := changes.Diff(ctx, img, img, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	allocs := testing.AllocsPerRun(5, func() {
		if _, err := changes.Diff(ctx, img, img, changes.DiffOptions{ReadSize: 256 << 20, Workers: 1000}); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%.0f allocations", allocs)
	if allocs > 50 {
		t.Errorf("%.0f allocations for a 4 KiB device", allocs)
	}
}
