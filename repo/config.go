package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/repo/backend"
)

// FormatVersion is the repository format this code writes at init; it
// reads and writes every version from 1 up to it. A repository with a
// higher version is refused with ErrNewerFormat. Version 2 added snapshot
// summaries (FORMAT.md, "Snapshot summaries"); a version 1 repository is
// migrated to them by its next write, object by object, and keeps its
// config.
const FormatVersion = 2

// ErrNewerFormat: the repository was written by a newer mover.
var ErrNewerFormat = errors.New("repository format is newer than this mover supports")

// BlobType tells what a blob holds. It is bound into each blob's seal.
type BlobType uint8

const (
	// BlobData is a chunk of volume data.
	BlobData BlobType = 1
	// BlobPage is a manifest page: the chunk list of one segment.
	BlobPage BlobType = 2
)

func (t BlobType) String() string {
	switch t {
	case BlobData:
		return "data"
	case BlobPage:
		return "page"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// Config is the sealed part of the repository config: everything that must
// be the same for every writer. It is fixed at init.
type Config struct {
	// Chunking decides chunk boundaries; see chunk.Params.
	Chunking chunk.Params `json:"chunking"`
	// PackSize is the default target size of a pack file in bytes.
	PackSize int `json:"pack_size"`
	// Created is when the repository was initialised.
	Created time.Time `json:"created"`
}

// Pack size bounds: a pack holds at least one maximal chunk and stays small
// enough to hold in memory while it is written.
const (
	MinPackSize     = 1 << 20
	MaxPackSize     = 512 << 20
	DefaultPackSize = 16 << 20
)

// Validate checks the config.
func (c Config) Validate() error {
	if err := c.Chunking.Validate(); err != nil {
		return err
	}
	if c.PackSize < MinPackSize || c.PackSize > MaxPackSize {
		return fmt.Errorf("pack size %d out of range [%d, %d]", c.PackSize, MinPackSize, MaxPackSize)
	}
	return nil
}

// configFile is the stored config object: a readable version and ID, and
// the sealed Config. The version is readable without a key so that an old
// mover can refuse a newer repository before asking for a password.
type configFile struct {
	Version int `json:"version"`
	ID      ID  `json:"id"`
	// ObjectLock is readable without a key, because the backend must know
	// it before the repository is opened; the seal binds it, so a
	// repository whose lock setting was removed does not open.
	ObjectLock *ObjectLock `json:"object_lock,omitempty"`
	Sealed     []byte      `json:"sealed"`
}

// ObjectLock asks every writer to store objects with an S3 Object Lock
// retention: Days from the time of writing, in Mode ("compliance" or
// "governance").
//
// Init and Open apply it to the backend themselves (backend.SetRetention),
// so a library user cannot write an object without it: on a backend that
// cannot keep a retention (a directory holding a copy of the bucket) Open
// succeeds for reading, and every write fails with ErrObjectLockRequired.
type ObjectLock struct {
	Days int    `json:"days"`
	Mode string `json:"mode"`
}

func (l ObjectLock) retention() backend.Retention {
	return backend.Retention{Days: l.Days, Mode: l.Mode}
}

// ErrObjectLockRequired: the repository asks for an Object Lock retention
// on everything written, and its storage cannot keep one.
var ErrObjectLockRequired = errors.New("the repository requires an Object Lock retention on every object, which this storage cannot keep")

// applyObjectLock makes be write under l: it sets the retention, or, when
// be cannot keep one, returns be with writes refused.
func applyObjectLock(ctx context.Context, be backend.Backend, l ObjectLock) (backend.Backend, error) {
	if backend.RetentionOf(be) == l.retention() {
		return be, nil
	}
	err := backend.SetRetention(ctx, be, l.retention())
	switch {
	case errors.Is(err, backend.ErrNoRetention):
		return noWrites{be}, nil
	case err != nil:
		return nil, fmt.Errorf("object lock of %d days: %w", l.Days, err)
	}
	return be, nil
}

// noWrites is a backend whose Puts are refused: a repository that needs
// retention, on storage that has none. Reads and deletes pass.
type noWrites struct{ backend.Backend }

func (n noWrites) Put(ctx context.Context, key string, data []byte) error {
	return fmt.Errorf("writing %s: %w", key, ErrObjectLockRequired)
}

func configAAD(version int, id ID, lock *ObjectLock) []byte {
	b := fmt.Appendf(nil, "%s %d %s", aadConfig, version, id)
	if lock != nil {
		b = fmt.Appendf(b, " object-lock %d %s", lock.Days, lock.Mode)
	}
	return b
}

// parseConfigFile decodes the stored config object and checks its version.
func parseConfigFile(b []byte) (*configFile, error) {
	var cf configFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if cf.Version > FormatVersion {
		return nil, fmt.Errorf("%w: repository format version %d, this mover reads up to version %d; upgrade mover", ErrNewerFormat, cf.Version, FormatVersion)
	}
	if cf.Version < 1 {
		return nil, fmt.Errorf("config: invalid format version %d", cf.Version)
	}
	return &cf, nil
}
