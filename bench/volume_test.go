package bench

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestCorpusTakesTurnsAndWraps(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	for i, content := range []string{"a1", "a2", "a3"} {
		os.WriteFile(filepath.Join(dirs[0], string(rune('0'+i))), []byte(content), 0o600)
	}
	os.WriteFile(filepath.Join(dirs[1], "x"), []byte("b1"), 0o600)
	c, err := NewCorpus(dirs...)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	// Turns between directories; a used-up directory is skipped until all
	// are used up, then everything starts again.
	if want := "a1b1a2a3a1b1a2a3"; string(got) != want {
		t.Fatalf("corpus order %q, want %q", got, want)
	}
	if c.Size() != 8 {
		t.Fatalf("size %d", c.Size())
	}
}

func TestGenerateDeterministic(t *testing.T) {
	spec := Spec{Size: 10<<20 + 3, Seed: 9, Zero: 0.3, Duplicate: 0.3, RegionSize: 1 << 20}
	gen := func() []byte {
		f, err := os.Create(filepath.Join(t.TempDir(), "v"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Truncate(spec.Size)
		classes, err := Generate(context.Background(), f, spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		zeros := 0
		for _, c := range classes {
			if c == Zero {
				zeros++
			}
		}
		if zeros != 3 {
			t.Fatalf("%d zero regions of 11, want 3", zeros)
		}
		b, _ := os.ReadFile(f.Name())
		return b
	}
	if !bytes.Equal(gen(), gen()) {
		t.Fatal("same spec, different bytes")
	}
}
