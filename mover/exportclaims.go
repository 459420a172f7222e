package mover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/repo"
)

// claimSharer is what Export uses, when the repository offers it, to claim
// chunks from other exports running at once (repo/claims.go): a chunk that
// another live writer is storing is referenced without being stored
// (deferred), and before the snapshot every deferred chunk is either in the
// index or read again from the source and stored. Every Source is an
// io.ReaderAt, so a deferred chunk can always be read again; a source that
// changed meanwhile fails the export rather than making a wrong snapshot.
type claimSharer interface {
	ReserveShared(id repo.ID) repo.Reservation
	KeepClaims(ctx context.Context)
	PublishClaims(ctx context.Context)
	AwaitDeferred(ctx context.Context, ids []repo.ID) ([]repo.ID, error)
	Has(id repo.ID) bool
	WithdrawClaims(ctx context.Context)
}

// claimTick is how often an export keeps its claims published and reads
// the others' (the repository rate-limits the requests, see
// repo/refresh.go).
const claimTick = 10 * time.Millisecond

// keepClaims calls KeepClaims and PublishClaims every claimTick, from a
// goroutine each, until the returned function is called.
func (e *exporter) keepClaims(ctx context.Context) func() {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){e.claims.PublishClaims, e.claims.KeepClaims} {
		wg.Go(func() {
			t := time.NewTicker(claimTick)
			defer t.Stop()
			for {
				f(ctx)
				select {
				case <-t.C:
				case <-stop:
					return
				case <-ctx.Done():
					return
				}
			}
		})
	}
	return func() {
		close(stop)
		wg.Wait()
	}
}

// reserve reports whether the piece's chunk id must be stored by this
// export. A chunk deferred to another writer is remembered with its place
// in the source (see storeDeferred).
func (e *exporter) reserve(id repo.ID, pc chunk.Piece) bool {
	if e.claims == nil {
		return e.st.Reserve(id)
	}
	switch e.claims.ReserveShared(id) {
	case repo.Store:
		return true
	case repo.Deferred:
		e.deferMu.Lock()
		e.deferred[id] = span{pc.Offset, pc.End()}
		e.deferMu.Unlock()
	}
	return false
}

// storeDeferred waits for the chunks deferred to other writers to appear
// in the index, and stores those their claimants did not store, read again
// from the source and checked against their IDs.
func (e *exporter) storeDeferred(ctx context.Context) error {
	if e.claims == nil {
		return nil
	}
	e.deferMu.Lock()
	ids := make([]repo.ID, 0, len(e.deferred))
	for id := range e.deferred {
		ids = append(ids, id)
	}
	e.deferMu.Unlock()
	ids, err := e.claims.AwaitDeferred(ctx, ids)
	if err != nil || len(ids) == 0 {
		return err
	}
	pk := e.st.NewPacker(e.opts.PackSize)
	h := e.st.NewHasher()
	save := func(p *repo.Pack) error {
		if p == nil {
			return nil
		}
		defer e.st.ReleasePack(p)
		return e.st.SavePack(ctx, p)
	}
	for _, id := range ids {
		e.deferMu.Lock()
		sp, ok := e.deferred[id]
		e.deferMu.Unlock()
		if !ok {
			return fmt.Errorf("chunk %s was deferred but its place is unknown", id.Short())
		}
		if !e.st.Reserve(id) {
			continue // indexed meanwhile
		}
		buf := make([]byte, sp.end-sp.start)
		if n, err := e.src.ReadAt(buf, sp.start); n < len(buf) && (err == nil || errors.Is(err, io.EOF)) {
			return fmt.Errorf("reading the chunk at offset %d again: short read", sp.start)
		} else if n < len(buf) {
			return fmt.Errorf("reading the chunk at offset %d again: %w", sp.start, err)
		}
		if h.Sum(buf) != id {
			return fmt.Errorf("the source changed while it was exported: the chunk at offset %d reads differently the second time", sp.start)
		}
		if _, err := pk.Add(repo.BlobData, id, buf); err != nil {
			return err
		}
		e.reclaimed.Add(1)
		e.newChunks.Add(1)
		e.newBytes.Add(int64(len(buf)))
		if pk.Full() {
			p, err := pk.Finish()
			if err != nil {
				return err
			}
			if err := save(p); err != nil {
				return err
			}
		}
	}
	p, err := pk.Finish()
	if err != nil {
		return err
	}
	return save(p)
}

// checkDeferred fails if a chunk deferred to another writer is not in the
// index once everything is flushed: the snapshot would name it.
func (e *exporter) checkDeferred() error {
	if e.claims == nil {
		return nil
	}
	e.deferMu.Lock()
	defer e.deferMu.Unlock()
	for id, sp := range e.deferred {
		if !e.claims.Has(id) {
			return fmt.Errorf("the chunk at offset %d, deferred to another export, is not in the index: the snapshot would name missing data", sp.start)
		}
	}
	return nil
}
