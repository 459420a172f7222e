package backend_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/mem"
)

// misranging is a real backend whose Get returns delta more (or fewer)
// bytes than asked for, as a buggy server might.
type misranging struct {
	*mem.Backend
	delta int64
}

func (b misranging) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rc, err := b.Backend.Get(ctx, key, offset, -1)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, length+b.delta), rc}, nil
}

func TestReadAll(t *testing.T) {
	ctx := t.Context()
	m := mem.New()
	obj := []byte("0123456789")
	if err := m.Put(ctx, "k", obj); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		be             backend.Backend
		offset, length int64
		want           []byte
		err            error // nil: any error
		ok             bool
	}{
		{be: m, length: -1, want: obj, ok: true},
		{be: m, offset: 3, length: -1, want: obj[3:], ok: true},
		{be: m, offset: 3, length: 4, want: obj[3:7], ok: true},
		{be: m, offset: 3, length: 0, want: []byte{}, ok: true},
		{be: m, offset: 10, length: -1, want: []byte{}, ok: true},
		{be: m, offset: 11, length: -1, err: backend.ErrInvalidRange},
		{be: misranging{m, -1}, offset: 3, length: 4, err: io.ErrUnexpectedEOF},
		{be: misranging{m, -4}, offset: 3, length: 4, err: io.ErrUnexpectedEOF},
		{be: misranging{m, +1}, offset: 3, length: 4},
		{be: backend.NewFaulty(m, backend.FaultOptions{GetBodyErrorRate: 1}), length: 10},
	} {
		got, err := backend.ReadAll(ctx, c.be, "k", c.offset, c.length)
		switch {
		case c.ok && (err != nil || !bytes.Equal(got, c.want)):
			t.Errorf("%T ReadAll(%d, %d) = %q, %v; want %q", c.be, c.offset, c.length, got, err, c.want)
		case !c.ok && (err == nil || c.err != nil && !errors.Is(err, c.err)):
			t.Errorf("%T ReadAll(%d, %d) = %q, %v; want error %v", c.be, c.offset, c.length, got, err, c.err)
		}
	}
}
