package bench

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// TestChangeListMatchesBytes: the change list holds exactly the bytes that
// differ between the volume and the changed volume (random new content
// differs from the old in every write), its size is the rate asked, and
// the pattern shapes it.
func TestChangeListMatchesBytes(t *testing.T) {
	spec := Spec{Size: 48 << 20, Seed: 21, Zero: 0.3, Compressible: 0.3, Duplicate: 0.1, RegionSize: 1 << 20}
	for _, tc := range []struct {
		name       string
		cs         ChangeSpec
		maxExtents int
	}{
		{"scattered 4KiB", ChangeSpec{Rate: 0.01, Pattern: Scattered, WriteSize: 4 << 10}, 123},
		{"clustered", ChangeSpec{Rate: 0.02, Pattern: Clustered, WriteSize: 8 << 10, Clusters: 16}, 16},
		{"sequential 64KiB", ChangeSpec{Rate: 0.05, Pattern: Sequential, WriteSize: 64 << 10}, 1},
		{"compressible content", ChangeSpec{Rate: 0.01, Pattern: Clustered, WriteSize: 4 << 10, Content: Compressible}, 64},
		{"everything", ChangeSpec{Rate: 1, Pattern: Scattered, WriteSize: 1 << 20}, 1},
		{"nothing", ChangeSpec{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVolume(spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Change(tc.cs)
			if err != nil {
				t.Fatal(err)
			}
			list := c.Changes()
			if len(list) > tc.maxExtents {
				t.Errorf("%d extents, want at most %d", len(list), tc.maxExtents)
			}
			// Rate·Size rounded to whole writes.
			if d := math.Abs(float64(c.Bytes()) - tc.cs.Rate*float64(spec.Size)); d > float64(tc.cs.writeSize())/2 {
				t.Errorf("%d bytes changed (%.5f), asked %.5f", c.Bytes(), float64(c.Bytes())/float64(spec.Size), tc.cs.Rate)
			}
			if int64(c.Writes())*tc.cs.writeSize() != c.Bytes() {
				t.Errorf("%d writes of %d bytes, %d bytes in the list", c.Writes(), tc.cs.writeSize(), c.Bytes())
			}
			before, after := make([]byte, spec.Size), make([]byte, spec.Size)
			v.ReadAt(before, 0)
			c.ReadAt(after, 0)
			at := int64(0)
			for _, e := range list {
				if e.Offset%tc.cs.writeSize() != 0 || e.Length%tc.cs.writeSize() != 0 {
					t.Fatalf("extent %+v not aligned to the write size", e)
				}
				if !bytes.Equal(before[at:e.Offset], after[at:e.Offset]) {
					t.Fatalf("bytes in [%d, %d), outside the change list, changed", at, e.Offset)
				}
				for w := e.Offset; w < e.End(); w += tc.cs.writeSize() {
					if bytes.Equal(before[w:w+tc.cs.writeSize()], after[w:w+tc.cs.writeSize()]) {
						t.Fatalf("the write at %d, in the change list, changed nothing", w)
					}
				}
				at = e.End()
			}
			if !bytes.Equal(before[at:], after[at:]) {
				t.Fatalf("bytes after %d, outside the change list, changed", at)
			}
			// The same spec gives the same change.
			again, _ := v.Change(tc.cs)
			if len(again.Changes()) != len(list) || len(list) > 0 && again.Changes()[0] != list[0] {
				t.Fatal("same change spec, different change list")
			}
		})
	}
}

func TestChangeApplyRevert(t *testing.T) {
	ctx := context.Background()
	v, _ := NewVolume(Spec{Size: 16 << 20, Seed: 4, Zero: 0.5, RegionSize: 1 << 20}, nil)
	c, err := v.Change(ChangeSpec{Rate: 0.05, Pattern: Clustered, WriteSize: 4 << 10, Clusters: 8})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := v.CopyTo(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := Compare(ctx, f, c, c.Size()); err != nil {
		t.Fatalf("after Apply: %v", err)
	}
	if err := Compare(ctx, f, v, v.Size()); !errors.Is(err, ErrMismatch) {
		t.Fatalf("the changed image compares equal to the base: %v", err)
	}
	if err := c.Revert(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := Compare(ctx, f, v, v.Size()); err != nil {
		t.Fatalf("after Revert: %v", err)
	}
	// The sparse view of the changed volume reports the writes that landed
	// in zero regions as data.
	sp := c.Sparse().(sparseSource)
	for _, e := range c.Changes() {
		s, end, _ := sp.NextData(e.Offset)
		if s > e.Offset || end < e.End() {
			t.Fatalf("change %+v not within data range [%d, %d)", e, s, end)
		}
	}
}

func TestChangeSpecRejected(t *testing.T) {
	for _, cs := range []ChangeSpec{
		{Rate: -0.1, Pattern: Scattered},
		{Rate: 1.5, Pattern: Scattered},
		{Rate: 0.1, Pattern: "diagonal"},
		{Rate: 0.1},
		{Rate: 0.1, Pattern: Scattered, WriteSize: 1 << 40},
		{Rate: 0.1, Pattern: Scattered, Content: Zero},
	} {
		if err := cs.Validate(1 << 30); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%+v: err %v, want ErrInvalidSpec", cs, err)
		}
	}
}

func TestPresets(t *testing.T) {
	for _, name := range Presets() {
		s, err := Preset(name, 256<<20, 1)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, _, err := s.Build(nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.String() == "" || s.ChangeString() == "" {
			t.Fatalf("%s: no description", name)
		}
	}
	if _, err := Preset("tape", 1<<20, 1); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("unknown preset: %v", err)
	}
}
