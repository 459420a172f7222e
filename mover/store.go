package mover

import (
	"context"

	"github.com/blockmover/blockmover/repo"
)

// The repository as the pipelines see it: one small interface per role,
// declared here where it is used, and composed per pipeline. Import needs
// only ImportRepo, Export only ExportRepo; *repo.Repository satisfies both,
// and a wrapper (fault injection, accounting) embeds it and overrides what
// it needs.

// PageLoader reads a snapshot's chunk list one page (segment) at a time:
// Import reads its snapshot's pages, an incremental Export its base's. o
// holds the calling goroutine's buffers; a zero repo.BlobOpener is ready.
type PageLoader interface {
	LoadPage(ctx context.Context, o *repo.BlobOpener, s *repo.Snapshot, i int) ([]repo.Entry, error)
}

// ChunkLoader finds chunks and reads them back verified, a run of one
// pack's blobs per ranged read: the pack's layout stays inside the
// repository. repo.Repository.LoadBlobsInto states the contract of
// LoadBlobsInto, the buffers' above all.
type ChunkLoader interface {
	Lookup(id repo.ID) (repo.BlobRef, bool)
	LoadBlobsInto(ctx context.Context, o *repo.BlobOpener, refs []repo.BlobRef, buf func(i, n int) ([]byte, error), fn func(i int, plain []byte) error) (repo.LoadStats, error)
}

// Hashing computes chunk IDs under the repository's ID key: one Hasher per
// goroutine.
type Hashing interface {
	NewHasher() *repo.Hasher
}

// ChunkSaver stores the chunks a repository lacks. Reserve claims an ID
// (false: the repository holds the chunk, or another writer is storing
// it); a Packer per goroutine compresses, seals and fills packs; SavePack
// uploads and indexes a finished pack; ReleasePack recycles its buffer.
type ChunkSaver interface {
	Reserve(id repo.ID) bool
	NewPacker(target int) *repo.Packer
	SavePack(ctx context.Context, p *repo.Pack) error
	ReleasePack(p *repo.Pack)
}

// SnapshotSaver writes a snapshot: its pages, then Flush (the pending page
// pack and index files for every saved pack), then the snapshot object,
// which exists only once everything it names is durable.
type SnapshotSaver interface {
	SavePage(ctx context.Context, entries []repo.Entry) (repo.ID, error)
	Flush(ctx context.Context) error
	SaveSnapshot(ctx context.Context, s *repo.Snapshot) error
}

// ImportRepo is what Import needs of a repository: the snapshot's pages,
// its chunks, and chunk IDs to compare a target with (VerifyTarget).
type ImportRepo interface {
	PageLoader
	ChunkLoader
	Hashing
}

// ExportRepo is what Export needs of a repository: the chunking
// parameters fixed at init (Config), chunk IDs, a way to store new chunks
// and the snapshot, the base snapshot's pages (incremental exports), and
// the bytes written to the backend so far (WrittenBytes, for
// StoredBytes).
type ExportRepo interface {
	Config() repo.Config
	WrittenBytes() int64
	Hashing
	ChunkSaver
	SnapshotSaver
	PageLoader
}

var (
	_ ImportRepo = (*repo.Repository)(nil)
	_ ExportRepo = (*repo.Repository)(nil)
)
