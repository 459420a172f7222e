package mover

import (
	"context"
	"testing"
	"unsafe"
)

// TestPlainBuffersMapped checks the pool's mappings: a buffer grown for a
// larger chunk unmaps the one it replaces, release unmaps the rest, and
// every buffer is aligned for direct writes in any phase.
func TestPlainBuffersMapped(t *testing.T) {
	ctx := context.Background()
	var p plainBuffers
	p.init(2, 4096)
	a, err := p.get(ctx, 100, 5)
	if err != nil {
		t.Fatal(err)
	}
	if addrOf(a)%4096 != 0 || cap(a) < 105 {
		t.Fatalf("buffer at %#x cap %d: want 4096-aligned, room for 105 bytes", addrOf(a), cap(a))
	}
	b, err := p.get(ctx, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.mapped) != 2 {
		t.Fatalf("%d buffers mapped, want 2 (no huge-page mappings here?)", len(p.mapped))
	}
	p.put(a)
	big, err := p.get(ctx, 5<<20, 0) // grows: a, too small, is unmapped
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.mapped[unsafe.SliceData(a)]; ok || len(p.mapped) != 2 {
		t.Fatalf("after growing: %d mapped, the small buffer still mapped: %v", len(p.mapped), ok)
	}
	big = big[:5<<20]
	big[len(big)-1] = 1
	p.put(big)
	p.put(b)
	p.release()
	if len(p.mapped) != 0 {
		t.Fatalf("%d buffers mapped after release", len(p.mapped))
	}
}
