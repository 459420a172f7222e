package mem_test

import (
	"errors"
	"testing"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/mem"
	"github.com/blockmover/blockmover/repo/backendtest"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return mem.New() })
}

func BenchmarkBackend(b *testing.B) {
	backendtest.Bench(b, func(b *testing.B) backend.Backend { return mem.New() })
}

func TestClosed(t *testing.T) {
	be := mem.New()
	ctx := t.Context()
	if err := be.Put(ctx, "config", []byte("x")); err != nil {
		t.Fatal(err)
	}
	rc, err := be.Get(ctx, "config", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
	if err := be.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// A reader from before Close stays readable.
	buf := make([]byte, 1)
	if n, err := rc.Read(buf); n != 1 || err != nil || buf[0] != 'x' {
		t.Errorf("Read after Close: %d, %v", n, err)
	}
	for name, err := range map[string]error{
		"Put":    be.Put(ctx, "other", nil),
		"Delete": be.Delete(ctx, "config"),
		"List":   be.List(ctx, "", func(backend.ObjectInfo) error { return nil }),
	} {
		if !errors.Is(err, backend.ErrPermanent) {
			t.Errorf("%s after Close: %v, want ErrPermanent", name, err)
		}
	}
	if _, err := be.Stat(ctx, "config"); !errors.Is(err, backend.ErrPermanent) {
		t.Errorf("Stat after Close: %v, want ErrPermanent", err)
	}
}
