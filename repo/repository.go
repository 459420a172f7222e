package repo

import (
	"cmp"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/internal/freelist"
	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/klauspost/compress/zstd"
)

// Object key prefixes in the backend.
const (
	configKey      = "config"
	keysPrefix     = "keys/"
	indexPrefix    = "index/"
	snapshotPrefix = "snapshots/"
	dataPrefix     = "data/"
)

// PackKey returns the backend key of a pack.
func PackKey(id ID) string { s := id.String(); return dataPrefix + s[:2] + "/" + s }

// Errors reported when opening.
var (
	// ErrNotRepository: there is no repository config at the location.
	ErrNotRepository = errors.New("no repository here")
	// ErrRepositoryExists: init found a repository already. A caller that
	// races another to initialise a location can open it instead.
	ErrRepositoryExists = errors.New("a repository already exists here")
	// ErrConfigLost: the location holds a repository's objects (key files,
	// packs, index files, snapshots) but no config. The config holds the
	// repository ID and the chunking parameters; a repository cannot be
	// opened without it and init does not overwrite it (FORMAT.md, "Lost
	// config").
	ErrConfigLost = errors.New("the repository config is missing: it holds the repository ID and the chunker polynomial, without which mover cannot open the repository, and init will not overwrite it; restore the config object from a backup copy (see repo/FORMAT.md, \"Lost config\")")
	// ErrNotEmpty: init found objects at a location that is not a
	// repository.
	ErrNotEmpty = errors.New("init needs an empty directory or S3 prefix")
)

// repoPrefixes are the prefixes of the objects that make a location a
// repository (with or without its config).
var repoPrefixes = []string{keysPrefix, dataPrefix, indexPrefix, snapshotPrefix}

// initWait is how long Init waits for another init's config when it finds
// key files and nothing else: the state between an init's first and last
// write.
const initWait = 5 * time.Second

// errStopList stops a listing early.
var errStopList = errors.New("stop listing")

// maxSurvey bounds the objects Init looks at before it refuses a location.
const maxSurvey = 1000

// checkEmpty reports whether Init may create a repository on be: only if
// the location holds no object at all. A config is ErrRepositoryExists; a
// repository's other objects without a config are ErrConfigLost; anything
// else is ErrNotEmpty, naming what is there.
func checkEmpty(ctx context.Context, be backend.Backend) error {
	if _, err := be.Stat(ctx, configKey); err == nil {
		return ErrRepositoryExists
	} else if !errors.Is(err, backend.ErrNotFound) {
		return fmt.Errorf("init: %w", err)
	}
	var n, keys, repoObjs int
	var example string
	err := be.List(ctx, "", func(oi backend.ObjectInfo) error {
		n++
		isRepo := false
		for _, p := range repoPrefixes {
			if strings.HasPrefix(oi.Key, p) {
				isRepo = true
			}
		}
		switch {
		case oi.Key == configKey:
			return ErrRepositoryExists
		case strings.HasPrefix(oi.Key, clockPrefix):
			// A clock probe of an interrupted init (staleInit).
			n--
		case strings.HasPrefix(oi.Key, keysPrefix):
			keys++
		case isRepo:
			repoObjs++
		case example == "":
			example = oi.Key
		}
		if n >= maxSurvey {
			return errStopList
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrRepositoryExists):
		return err
	case err != nil && !errors.Is(err, errStopList):
		return fmt.Errorf("init: listing the location: %w", err)
	case repoObjs > 0:
		return configLost(ctx, be)
	case example != "":
		count := fmt.Sprintf("%d objects", n)
		switch {
		case n >= maxSurvey:
			count = fmt.Sprintf("%d or more objects", n)
		case n == 1:
			count = "1 object"
		}
		return fmt.Errorf("the location is not empty (holds %s, e.g. %s); %w", count, example, ErrNotEmpty)
	case keys > 0:
		// Another init may be between its key file and its config.
		if err := waitForConfig(ctx, be, initWait); err != nil {
			return err
		}
		return takeOverInit(ctx, be)
	}
	return nil
}

// staleInit is how old the key files of a location without a config must
// be, by the storage's clock, before an init takes the location over: an
// init writes its config right after its key file, so such key files are
// from an init that was killed between the two writes.
const staleInit = DefaultStaleLease

// takeOverInit handles a location that holds key files and nothing else
// of a repository: what an init killed between its key file and its config
// leaves. No config means no repository was ever usable there and no data
// was stored, so once the key files are staleInit old they are deleted and
// the init goes on; younger ones may belong to an init still at work, and
// the error (wrapping ErrLeaseHeld) says when they will be taken over.
func takeOverInit(ctx context.Context, be backend.Backend) error {
	var keys []backend.ObjectInfo
	if err := be.List(ctx, keysPrefix, func(oi backend.ObjectInfo) error {
		keys = append(keys, oi)
		return nil
	}); err != nil {
		return fmt.Errorf("init: listing key files: %w", err)
	}
	now, err := storageNow(ctx, be)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	var newest time.Time
	for _, k := range keys {
		if k.ModTime.After(newest) {
			newest = k.ModTime
		}
	}
	if now.Sub(newest) < staleInit {
		return fmt.Errorf("%w: the location holds %d key files and no config, the newest from %s: an init is at work or was interrupted; it is taken over at %s",
			ErrLeaseHeld, len(keys), newest.UTC().Format(time.RFC3339), newest.Add(staleInit).UTC().Format(time.RFC3339))
	}
	for _, k := range keys {
		if err := be.Delete(ctx, k.Key); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("init: deleting %s of an interrupted init: %w", k.Key, err)
		}
	}
	return nil
}

// waitForConfig polls for a config for up to d: ErrRepositoryExists if one
// appears, nil if not.
func waitForConfig(ctx context.Context, be backend.Backend, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := be.Stat(ctx, configKey); err == nil {
			return ErrRepositoryExists
		} else if !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("init: %w", err)
		}
		if !time.Now().Before(deadline) {
			return nil
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// noConfig explains a location without a config: ErrConfigLost if it holds
// a repository's objects, ErrNotRepository if not.
func noConfig(ctx context.Context, be backend.Backend) error {
	for _, p := range repoPrefixes {
		err := be.List(ctx, p, func(backend.ObjectInfo) error { return errStopList })
		switch {
		case errors.Is(err, errStopList):
			return configLost(ctx, be)
		case err != nil:
			return fmt.Errorf("no config, and listing %s failed: %w", p, err)
		}
	}
	return ErrNotRepository
}

// configLost returns ErrConfigLost, saying what the location still holds.
func configLost(ctx context.Context, be backend.Backend) error {
	var found []string
	for _, p := range repoPrefixes {
		if err := be.List(ctx, p, func(backend.ObjectInfo) error { return errStopList }); errors.Is(err, errStopList) {
			found = append(found, p)
		}
	}
	if len(found) == 1 && found[0] == keysPrefix {
		return fmt.Errorf("%w (the location holds key files and nothing else: if an init was interrupted, no data was stored yet, so delete %s and run init again)", ErrConfigLost, keysPrefix)
	}
	return fmt.Errorf("%w (the location still holds %s)", ErrConfigLost, strings.Join(found, ", "))
}

// Compression levels for new blobs.
const (
	CompressFastest = "fastest"
	CompressDefault = "default"
	CompressBetter  = "better"
)

func zstdLevel(name string) (zstd.EncoderLevel, error) {
	switch name {
	case "", CompressFastest:
		return zstd.SpeedFastest, nil
	case CompressDefault:
		return zstd.SpeedDefault, nil
	case CompressBetter:
		return zstd.SpeedBetterCompression, nil
	}
	return 0, fmt.Errorf("unknown compression %q (want %s, %s or %s)", name, CompressFastest, CompressDefault, CompressBetter)
}

// Options tune an open repository without changing its format.
type Options struct {
	// Compression: CompressFastest (default), CompressDefault or
	// CompressBetter.
	Compression string
	// Workers bounds concurrent compression (default GOMAXPROCS).
	Workers int
	// NoIndex skips loading the index at Open (for Check and repair,
	// which read index files themselves and report damage).
	NoIndex bool
	// IndexCache is the directory of the local index cache ("" for none;
	// DefaultIndexCache names the usual place): LoadIndex reads only the
	// index files that are new since the cache was written. See
	// LoadIndex.
	IndexCache string
	// IndexEstimate, if set, is called by LoadIndex before it reads any
	// index file, with the repository's config and an upper bound of the
	// blobs the index will hold: a caller can set its memory limit before
	// the load.
	IndexEstimate func(cfg Config, blobs int)
	// cacheRelist overrides cacheRelist (tests).
	cacheRelist time.Duration
}

// InitOptions are the choices fixed at init.
type InitOptions struct {
	Options
	// Chunking; zero value: chunk.DefaultParams with a random polynomial.
	Chunking *chunk.Params
	// PackSize; zero: DefaultPackSize.
	PackSize int
	// KDF for the first key file; zero: DefaultKDF().
	KDF KDFParams
	// ObjectLock, if set, is recorded for every writer (see ObjectLock).
	ObjectLock *ObjectLock
}

// Repository is an open repository. Its methods are safe for concurrent use
// unless a method says otherwise.
type Repository struct {
	be    backend.Backend
	id    ID
	cfg   Config
	key   masterKey
	keyID string // the key file that opened the repository
	aead  cipher.AEAD
	enc   *zstd.Encoder
	dec   *zstd.Decoder
	idx   *index

	bufs     freelist.List // pack buffers, kept across GCs (not a sync.Pool: see freelist)
	written  atomic.Int64  // bytes Put to the backend
	migrated atomic.Bool   // SaveSnapshot ran MigrateSummaries
	// othersSeen: when a refresh last found another writer's index file
	// (Unix nanoseconds; 0: never), read by every Packer.Full.
	othersSeen atomic.Int64

	mu         sync.Mutex
	unindexed  []indexPack                // saved packs not yet in an index file
	publishing map[*indexPack][]indexPack // packs of index files being written
	pagePacker *Packer
	pageHasher *Hasher
	indexNames []string // index files this Repository wrote
	warnings   []error  // damage LoadIndex worked around
	opts       Options
	loaded     IndexStats
	cacheNotes []error
	refresh    *refresher // nil until LoadIndex (see refresh.go)
}

// Init creates a repository on be, sealed under password. The location
// must be empty: Init returns ErrRepositoryExists if it holds a repository
// (also when another Init wins a race for it), an error wrapping
// ErrConfigLost if it holds a repository's objects without their config,
// and one wrapping ErrNotEmpty, naming an object, if it holds anything
// else. Key files and nothing else are the state between the first and the
// last write of an init: Init waits a few seconds for that init's config
// before it calls them a lost config.
func Init(ctx context.Context, be backend.Backend, password []byte, opts InitOptions) (*Repository, error) {
	if err := checkEmpty(ctx, be); err != nil {
		return nil, err
	}
	cfg := Config{PackSize: opts.PackSize, Created: time.Now().UTC().Truncate(time.Second)}
	if cfg.PackSize == 0 {
		cfg.PackSize = DefaultPackSize
	}
	if opts.Chunking != nil {
		cfg.Chunking = *opts.Chunking
	} else {
		pol, err := chunk.NewPolynomial()
		if err != nil {
			return nil, err
		}
		cfg.Chunking = chunk.DefaultParams(pol)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if l := opts.ObjectLock; l != nil {
		// Every object, the config first, carries the retention.
		if err := backend.SetRetention(ctx, be, l.retention()); err != nil {
			return nil, fmt.Errorf("init: object lock of %d days: %w", l.Days, err)
		}
	}
	kdf := opts.KDF
	if kdf == (KDFParams{}) {
		kdf = DefaultKDF()
	}
	mk, err := newMasterKey()
	if err != nil {
		return nil, err
	}
	r := &Repository{be: be, cfg: cfg, key: mk, idx: newIndex()}
	if err := r.setup(opts.Options); err != nil {
		return nil, err
	}
	kf, err := newKeyFile(mk, password, kdf)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	r.keyID = fileID(kf).String()
	if err := be.Put(ctx, keysPrefix+r.keyID, kf); err != nil {
		return nil, fmt.Errorf("init: writing key: %w", err)
	}
	var rid ID
	copy(rid[:], newRandom(32))
	r.id = rid
	plain, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cf := configFile{Version: FormatVersion, ID: rid, ObjectLock: opts.ObjectLock,
		Sealed: seal(r.aead, nil, plain, configAAD(FormatVersion, rid, opts.ObjectLock))}
	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return nil, err
	}
	// The config is written last: a crash before it leaves no repository
	// (a stray key file is harmless and init can run again).
	if err := be.Put(ctx, configKey, b); err != nil {
		if errors.Is(err, backend.ErrExists) {
			// Another init won the race: its config names its own key
			// file, and ours (named by its random content) would only
			// make opening with the same password fail. Best effort.
			be.Delete(ctx, keysPrefix+r.keyID)
			return nil, ErrRepositoryExists
		}
		return nil, fmt.Errorf("init: writing config: %w", err)
	}
	return r, nil
}

// DefaultIndexCache returns the usual directory of the local index cache:
// blockmover/index in the user's cache directory (os.UserCacheDir).
func DefaultIndexCache() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "blockmover", "index"), nil
}

// Open opens the repository on be with password, and loads its index.
// A location without a config is ErrNotRepository, or ErrConfigLost if it
// holds a repository's other objects.
func Open(ctx context.Context, be backend.Backend, password []byte, opts Options) (*Repository, error) {
	cf, err := readConfigFile(ctx, be)
	if err != nil {
		return nil, err
	}
	mk, keyID, err := unlockAny(ctx, be, password)
	if err != nil {
		return nil, err
	}
	if cf.ObjectLock != nil {
		if be, err = applyObjectLock(ctx, be, *cf.ObjectLock); err != nil {
			return nil, err
		}
	}
	r := &Repository{be: be, id: cf.ID, key: mk, keyID: keyID, idx: newIndex()}
	aead, err := newAEAD(mk.Enc[:])
	if err != nil {
		return nil, err
	}
	plain, err := open(aead, nil, cf.Sealed, configAAD(cf.Version, cf.ID, cf.ObjectLock))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := json.Unmarshal(plain, &r.cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := r.cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	// The codecs are sized by the config: set up after reading it.
	if err := r.setup(opts); err != nil {
		return nil, err
	}
	if !opts.NoIndex {
		if err := r.LoadIndex(ctx); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// ReadObjectLock returns the Object Lock setting recorded at init, without a
// key. Open applies it itself (see ObjectLock) and verifies it against the
// sealed config.
func ReadObjectLock(ctx context.Context, be backend.Backend) (*ObjectLock, error) {
	cf, err := readConfigFile(ctx, be)
	if err != nil {
		return nil, err
	}
	return cf.ObjectLock, nil
}

// readConfigFile reads and parses the config's readable part. A location
// without a config is ErrNotRepository, or ErrConfigLost if it holds a
// repository's other objects.
func readConfigFile(ctx context.Context, be backend.Backend) (*configFile, error) {
	b, err := backend.ReadAll(ctx, be, configKey, 0, -1)
	if errors.Is(err, backend.ErrNotFound) {
		return nil, noConfig(ctx, be)
	}
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return parseConfigFile(b)
}

// unlockAny opens the master key with the first key file that password
// opens. A key file whose content does not hash to its name is damaged: it
// is not tried, and the error names it. If no key file opens, the error is
// ErrWrongPassword (naming damaged and unusable files beside it), or, if no
// intact key file could be tried at all, says that.
func unlockAny(ctx context.Context, be backend.Backend, password []byte) (masterKey, string, error) {
	var names []string
	err := be.List(ctx, keysPrefix, func(oi backend.ObjectInfo) error {
		names = append(names, strings.TrimPrefix(oi.Key, keysPrefix))
		return nil
	})
	if err != nil {
		return masterKey{}, "", fmt.Errorf("listing keys: %w", err)
	}
	if len(names) == 0 {
		return masterKey{}, "", errors.New("repository has no key files")
	}
	slices.Sort(names)
	var errs []error
	tried, damaged := 0, 0
	for _, name := range names {
		b, err := backend.ReadAll(ctx, be, keysPrefix+name, 0, -1)
		if err != nil {
			return masterKey{}, "", fmt.Errorf("reading key file %s%s: %w", keysPrefix, name, err)
		}
		if err := checkKeyFileName(name, b); err != nil {
			damaged++
			errs = append(errs, err)
			continue
		}
		kf, err := parseKeyFile(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("key file %s%s: %w", keysPrefix, name, err))
			continue
		}
		tried++
		mk, err := kf.unlock(password)
		if err == nil {
			return mk, name, nil
		}
		if !errors.Is(err, ErrWrongPassword) {
			errs = append(errs, fmt.Errorf("key file %s%s: %w", keysPrefix, name, err))
		}
	}
	switch {
	case damaged == len(names):
		return masterKey{}, "", listError{"every key file is damaged, so no password opens the repository: ", errs}
	case tried == 0:
		return masterKey{}, "", listError{"no usable key file: ", errs}
	case len(errs) > 0:
		return masterKey{}, "", fmt.Errorf("%w (not usable: %w)", ErrWrongPassword, listError{"", errs})
	}
	return masterKey{}, "", ErrWrongPassword
}

// listError is several errors on one line, after a prefix.
type listError struct {
	prefix string
	errs   []error
}

func (e listError) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return e.prefix + strings.Join(msgs, "; ")
}

func (e listError) Unwrap() []error { return e.errs }

func (r *Repository) setup(opts Options) error {
	r.opts = opts
	aead, err := newAEAD(r.key.Enc[:])
	if err != nil {
		return err
	}
	r.aead = aead
	level, err := zstdLevel(opts.Compression)
	if err != nil {
		return err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// One encoder serves every worker: EncodeAll is safe for concurrent
	// use up to the concurrency. CRC is off (GCM authenticates) and the
	// window is bounded by the largest blob.
	r.enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false),
		zstd.WithEncoderConcurrency(workers), zstd.WithWindowSize(zstdWindow(r.cfg.Chunking.MaxChunk())), zstd.WithZeroFrames(true))
	if err != nil {
		return err
	}
	r.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(workers),
		zstd.WithDecoderMaxMemory(maxBlob), zstd.WithDecoderMaxWindow(maxBlob))
	if err != nil {
		return err
	}
	r.pageHasher = newHasher(r.key.ID[:])
	return nil
}

// zstdWindow is the smallest power of two window that holds a whole blob:
// every blob is compressed on its own, so a larger window only costs memory.
func zstdWindow(maxChunk int) int {
	w := zstd.MinWindowSize
	for w < maxChunk && w < zstd.MaxWindowSize {
		w <<= 1
	}
	return w
}

// Close releases the repository's resources. It does not flush: call Flush
// first to keep what was written.
func (r *Repository) Close() error {
	r.bufs.Drop()
	if r.enc != nil {
		r.enc.Close()
	}
	if r.dec != nil {
		r.dec.Close()
	}
	return nil
}

// Backend returns the backend the repository lives on.
func (r *Repository) Backend() backend.Backend { return r.be }

// Config returns the repository's fixed config.
func (r *Repository) Config() Config { return r.cfg }

// RepoID returns the repository's random ID.
func (r *Repository) RepoID() ID { return r.id }

// NewHasher returns a chunk ID hasher for one goroutine.
func (r *Repository) NewHasher() *Hasher { return newHasher(r.key.ID[:]) }

// Lookup returns where blob id is stored.
func (r *Repository) Lookup(id ID) (BlobRef, bool) { return r.idx.Lookup(id) }

// Has reports whether blob id is stored.
func (r *Repository) Has(id ID) bool { return r.idx.Has(id) }

// Reserve reports whether the caller should store blob id: true when it is
// neither stored nor being stored by another writer in this process, in
// which case the caller must store it (or fail the export). Before it
// decides that a blob is new, it re-reads the index files that other
// writers wrote since the last look, if that is due (see refresh.go).
func (r *Repository) Reserve(id ID) bool {
	if r.idx.Has(id) {
		return false
	}
	r.reserveRefresh()
	return r.idx.Reserve(id)
}

// WrittenBytes returns how many bytes this Repository has written to the
// backend since it was opened (packs, index files, snapshots, keys).
func (r *Repository) WrittenBytes() int64 { return r.written.Load() }

// put writes an object and counts its bytes.
func (r *Repository) put(ctx context.Context, key string, data []byte) error {
	err := r.be.Put(ctx, key, data)
	if err == nil {
		r.written.Add(int64(len(data)))
	}
	return err
}

// IndexedBytes returns the stored bytes of all indexed blobs: what a
// crashed export's rerun will not upload again.
func (r *Repository) IndexedBytes() int64 {
	var n int64
	r.idx.each(func(b BlobRef) error { n += int64(b.Length); return nil })
	return n
}

// IndexLen returns the number of indexed blobs.
func (r *Repository) IndexLen() int { return r.idx.Len() }

func newRandom(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return b
}

// packBuffer returns an empty buffer for a pack of about target bytes.
func (r *Repository) packBuffer(target int) []byte {
	// A pack is finished once it reaches target, so it overshoots by at
	// most one sealed chunk, plus its header (about 60 bytes a blob).
	want := target + r.cfg.Chunking.MaxChunk() + Overhead + 64<<10
	if b := r.bufs.Get(want); b != nil {
		return b
	}
	return make([]byte, 0, want)
}

// ReleasePack returns a saved pack's buffer for reuse. The caller must not
// touch p.Data afterwards. The repository keeps released buffers for later
// packs until Close (no more than were in use at once, at most
// freelist.DefaultMax), so a program that keeps a Repository open between
// exports holds them meanwhile.
func (r *Repository) ReleasePack(p *Pack) {
	if p == nil || p.Data == nil {
		return
	}
	b := p.Data[:0]
	p.Data = nil
	r.bufs.Put(b)
}

// SavePack uploads a finished pack and indexes its blobs. The blobs become
// durable (survive a crash) once an index file covering them is written by
// Flush or a checkpoint; SavePack writes one every IndexCheckpoint packs,
// and, in a Repository opened with its index, sooner: after its 1st, 2nd,
// 4th, ... pack, and after every pack while other writers' index files
// appear. It then re-reads the index files other writers wrote since it
// last looked, if that is due, so that the blobs they stored are not
// stored again (see refresh.go).
func (r *Repository) SavePack(ctx context.Context, p *Pack) error {
	if err := r.put(ctx, PackKey(p.ID), p.Data); err != nil {
		return fmt.Errorf("saving pack %s: %w", p.ID.Short(), err)
	}
	// Unindexed before the blobs leave the reservations: a blob stays in
	// the outstanding set (claims.go) until an index file names it.
	r.mu.Lock()
	r.unindexed = append(r.unindexed, indexPack{ID: p.ID, Key: p.Key, Blobs: p.Blobs})
	n := len(r.unindexed)
	r.mu.Unlock()
	r.idx.add(p.ID, p.Key, time.Time{}, p.Blobs)
	if r.publishDue(n) {
		if err := r.flushIndex(ctx); err != nil {
			return err
		}
	}
	r.maybeRefresh(ctx)
	return nil
}

// IndexCheckpoint is how many saved packs trigger an index file.
const IndexCheckpoint = 32

// flushIndex writes an index file for the saved packs not yet in one.
func (r *Repository) flushIndex(ctx context.Context) error {
	r.mu.Lock()
	packs := r.unindexed
	r.unindexed = nil
	if len(packs) == 0 {
		r.mu.Unlock()
		return nil
	}
	// Outstanding (claims.go) until the put returns.
	if r.publishing == nil {
		r.publishing = map[*indexPack][]indexPack{}
	}
	r.publishing[&packs[0]] = packs
	r.mu.Unlock()
	data := seal(r.aead, nil, encodeIndex(packs), []byte(aadIndex))
	key := indexPrefix + fileID(data).String()
	r.published(key) // before the put: a refresh must not take it for another writer's
	err := r.put(ctx, key, data)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.publishing, &packs[0])
	if err != nil && !errors.Is(err, backend.ErrExists) {
		r.unindexed = append(packs, r.unindexed...)
		return fmt.Errorf("writing index: %w", err)
	}
	r.indexNames = append(r.indexNames, key)
	return nil
}

// writtenIndexFiles returns the index files this Repository wrote.
func (r *Repository) writtenIndexFiles() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.indexNames)
}

// indexWriter writes index files of about compactBlobs entries each, for
// gc's compaction and the index repair. Not safe for concurrent use.
type indexWriter struct {
	r       *Repository
	batch   []indexPack
	blobs   int
	written []string
}

// add queues a pack's record and writes a file when the batch is full.
func (w *indexWriter) add(ctx context.Context, p indexPack) error {
	w.batch = append(w.batch, p)
	w.blobs += len(p.Blobs)
	if w.blobs >= compactBlobs {
		return w.flush(ctx)
	}
	return nil
}

// flush writes the queued records as one index file.
func (w *indexWriter) flush(ctx context.Context) error {
	if len(w.batch) == 0 {
		return nil
	}
	data := seal(w.r.aead, nil, encodeIndex(w.batch), []byte(aadIndex))
	key := indexPrefix + fileID(data).String()
	if err := w.r.put(ctx, key, data); err != nil && !errors.Is(err, backend.ErrExists) {
		return fmt.Errorf("writing index: %w", err)
	}
	w.written = append(w.written, key)
	w.batch, w.blobs = nil, 0
	return nil
}

// compactBlobs is the number of blob entries per rewritten index file.
const compactBlobs = 200_000

// SavePage stores a manifest page (if the repository lacks it) and returns
// its ID. Pages are packed together by one shared packer.
func (r *Repository) SavePage(ctx context.Context, entries []Entry) (ID, error) {
	plain := EncodePage(entries)
	r.mu.Lock()
	id := r.pageHasher.pageID(plain)
	r.mu.Unlock()
	if !r.idx.Reserve(id) {
		return id, nil
	}
	r.mu.Lock()
	if r.pagePacker == nil {
		r.pagePacker = r.NewPacker(0)
	}
	pp := r.pagePacker
	_, err := pp.Add(BlobPage, id, plain)
	var full *Pack
	if err == nil && pp.Full() {
		full, err = pp.Finish()
	}
	r.mu.Unlock()
	if err != nil {
		return id, err
	}
	if full != nil {
		defer r.ReleasePack(full)
		if err := r.SavePack(ctx, full); err != nil {
			return id, err
		}
	}
	return id, nil
}

// Flush saves the pending page pack and writes an index file for every
// saved pack: after Flush, everything saved is durable.
func (r *Repository) Flush(ctx context.Context) error {
	r.mu.Lock()
	var p *Pack
	var err error
	if r.pagePacker != nil {
		p, err = r.pagePacker.Finish()
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if p != nil {
		defer r.ReleasePack(p)
		if err := r.SavePack(ctx, p); err != nil {
			return err
		}
	}
	return r.flushIndex(ctx)
}

func (r *Repository) readIndexFile(ctx context.Context, key string) ([]indexPack, error) {
	data, err := backend.ReadAll(ctx, r.be, key, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	if want := strings.TrimPrefix(key, indexPrefix); fileID(data).String() != want {
		return nil, fmt.Errorf("index file %s: %w: content does not match its name", key, ErrAuth)
	}
	plain, err := open(r.aead, nil, data, []byte(aadIndex))
	if err != nil {
		return nil, fmt.Errorf("index file %s: %w", key, err)
	}
	packs, err := decodeIndex(plain)
	if err != nil {
		return nil, fmt.Errorf("index file %s: %w", key, err)
	}
	return packs, nil
}

// SaveSnapshot writes the snapshot object and sets s.ID. Call Flush first:
// a snapshot must only name pages and chunks that are durable. The volume
// name must pass CheckVolumeName.
func (r *Repository) SaveSnapshot(ctx context.Context, s *Snapshot) error {
	if err := CheckVolumeName(s.Volume); err != nil {
		return fmt.Errorf("saving snapshot: %w", err)
	}
	if err := s.validate(); err != nil {
		return err
	}
	plain, err := json.Marshal(s)
	if err != nil {
		return err
	}
	data := seal(r.aead, nil, r.enc.EncodeAll(plain, nil), []byte(aadSnapshot))
	id := fileID(data)
	if err := r.put(ctx, snapshotPrefix+id.String(), data); err != nil {
		return fmt.Errorf("saving snapshot: %w", err)
	}
	s.ID = id
	// The snapshot is durable and complete; its summary and the migration
	// of older snapshots only speed listings up, so their failure is a
	// warning, repaired by the next write (MigrateSummaries).
	// The migration runs once per Repository (an export saves one
	// snapshot; a caller saving thousands lists them once).
	if err := r.saveSummary(ctx, s, int64(len(data))); err != nil {
		r.warn(err)
	} else if !r.migrated.Load() {
		if _, err := r.MigrateSummaries(ctx); err != nil {
			r.warn(err)
		} else {
			r.migrated.Store(true)
		}
	}
	return nil
}

// warn records a problem that did not fail the operation (see Warnings).
func (r *Repository) warn(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.warnings = append(r.warnings, err)
}

// LoadSnapshot reads snapshot id. A damaged file is an error wrapping
// ErrAuth (its content does not match its name, or it fails
// authentication) or a format error.
func (r *Repository) LoadSnapshot(ctx context.Context, id ID) (*Snapshot, error) {
	key := snapshotPrefix + id.String()
	data, err := backend.ReadAll(ctx, r.be, key, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("reading snapshot %s: %w", id.Short(), err)
	}
	return r.decodeSnapshot(id, data)
}

// decodeSnapshot checks and decodes the bytes of snapshot file id. Every
// error it returns means the file is damaged.
func (r *Repository) decodeSnapshot(id ID, data []byte) (*Snapshot, error) {
	if fileID(data) != id {
		return nil, fmt.Errorf("snapshot %s: %w: content does not match its name", id.Short(), ErrAuth)
	}
	z, err := open(r.aead, nil, data, []byte(aadSnapshot))
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id.Short(), err)
	}
	plain, err := r.dec.DecodeAll(z, nil)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w: %w", id.Short(), errFormat, err)
	}
	var s Snapshot
	if err := json.Unmarshal(plain, &s); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w: %w", id.Short(), errFormat, err)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id.Short(), err)
	}
	s.ID = id
	return &s, nil
}

// SnapshotIDs lists the IDs of all snapshots.
func (r *Repository) SnapshotIDs(ctx context.Context) ([]ID, error) {
	var ids []ID
	err := r.be.List(ctx, snapshotPrefix, func(oi backend.ObjectInfo) error {
		id, err := ParseID(strings.TrimPrefix(oi.Key, snapshotPrefix))
		if err != nil {
			return nil // not ours; check reports it
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing snapshots: %w", err)
	}
	return ids, nil
}

// UnreadableSnapshot is a snapshot file that exists but is damaged: its
// content does not match its name, fails authentication or does not
// decode. Its volume and time are unknown.
type UnreadableSnapshot struct {
	ID  ID
	Err error
}

// Key returns the snapshot file's backend key.
func (u UnreadableSnapshot) Key() string { return snapshotPrefix + u.ID.String() }

func (u UnreadableSnapshot) Error() string { return fmt.Sprintf("%s: unreadable: %v", u.Key(), u.Err) }

func (u UnreadableSnapshot) Unwrap() error { return u.Err }

// ReadSnapshots loads every snapshot it can, oldest first, and returns the
// damaged snapshot files apart, by ID: one damaged file never hides the
// others. A snapshot deleted while it was being listed is left out. The
// error is for what is not damage: the listing or a read failing.
//
// Anything that deletes data on the strength of the snapshots (gc) must
// treat a damaged snapshot as one that may still need every chunk.
func (r *Repository) ReadSnapshots(ctx context.Context) ([]*Snapshot, []UnreadableSnapshot, error) {
	ids, err := r.SnapshotIDs(ctx)
	if err != nil {
		return nil, nil, err
	}
	snaps := make([]*Snapshot, len(ids))
	bad := make([]error, len(ids))
	g, gctx := safego.WithContext(ctx)
	g.SetLimit(8)
	for i, id := range ids {
		g.Go(func() error {
			data, err := backend.ReadAll(gctx, r.be, snapshotPrefix+id.String(), 0, -1)
			if errors.Is(err, backend.ErrNotFound) {
				return nil // forgotten meanwhile
			}
			if err != nil {
				return fmt.Errorf("reading snapshot %s: %w", id.Short(), err)
			}
			snaps[i], bad[i] = r.decodeSnapshot(id, data)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	var good []*Snapshot
	var damaged []UnreadableSnapshot
	for i, s := range snaps {
		switch {
		case bad[i] != nil:
			damaged = append(damaged, UnreadableSnapshot{ID: ids[i], Err: bad[i]})
		case s != nil:
			good = append(good, s)
		}
	}
	slices.SortFunc(good, func(a, b *Snapshot) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.ID.String(), b.ID.String())
	})
	slices.SortFunc(damaged, func(a, b UnreadableSnapshot) int { return cmp.Compare(a.ID.String(), b.ID.String()) })
	return good, damaged, nil
}

// Snapshots loads every snapshot, oldest first. It fails if any snapshot
// file is damaged (the error is an UnreadableSnapshot); ReadSnapshots
// returns the readable ones and the damaged ones apart.
func (r *Repository) Snapshots(ctx context.Context) ([]*Snapshot, error) {
	snaps, damaged, err := r.ReadSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	if len(damaged) > 0 {
		return nil, damaged[0]
	}
	return snaps, nil
}

// ErrSnapshotNotFound is wrapped when FindSnapshot finds no match.
var ErrSnapshotNotFound = errors.New("snapshot not found")

// FindSnapshot resolves a snapshot reference: a full ID, a unique ID
// prefix, "latest" (the newest snapshot) or "latest:VOLUME" (the newest of
// that volume). It is ResolveSnapshot without the list of damaged files
// "latest" passed over.
func (r *Repository) FindSnapshot(ctx context.Context, ref string) (*Snapshot, error) {
	s, _, err := r.ResolveSnapshot(ctx, ref)
	return s, err
}

// ResolveSnapshot resolves a snapshot reference like FindSnapshot. "latest"
// and "latest:VOLUME" choose among the readable snapshots; skipped lists
// the damaged snapshot files they passed over (any of them might have been
// newer, or of that volume), for the caller to warn about. An ID or prefix
// that names a damaged file is an error naming it.
func (r *Repository) ResolveSnapshot(ctx context.Context, ref string) (s *Snapshot, skipped []UnreadableSnapshot, err error) {
	if ref == "" {
		return nil, nil, errors.New("empty snapshot reference")
	}
	if ref == "latest" || strings.HasPrefix(ref, "latest:") {
		vol, byVol := strings.CutPrefix(ref, "latest:")
		return r.resolveLatest(ctx, vol, byVol)
	}
	id, err := r.MatchSnapshotID(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	s, err = r.LoadSnapshot(ctx, id)
	return s, nil, err
}

// MatchSnapshotID resolves a full snapshot ID or a unique prefix of one to
// the ID of an existing snapshot file, without reading it, so that a
// damaged snapshot can still be named (and forgotten).
func (r *Repository) MatchSnapshotID(ctx context.Context, ref string) (ID, error) {
	if ref == "" {
		return ID{}, errors.New("empty snapshot reference")
	}
	ids, err := r.SnapshotIDs(ctx)
	if err != nil {
		return ID{}, err
	}
	var match []ID
	for _, id := range ids {
		if strings.HasPrefix(id.String(), strings.ToLower(ref)) {
			match = append(match, id)
		}
	}
	switch len(match) {
	case 0:
		return ID{}, fmt.Errorf("%w: %q", ErrSnapshotNotFound, ref)
	case 1:
		return match[0], nil
	}
	return ID{}, fmt.Errorf("snapshot prefix %q is ambiguous (%d matches)", ref, len(match))
}
