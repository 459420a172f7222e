package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/location"
	"github.com/blockmover/blockmover/repo/backend/s3"
)

// Op is one measured operation.
type Op string

// Operations, in the order a run performs them.
const (
	FullExport        Op = "full-export"        // a first export into an empty repository
	IncrementalExport Op = "incremental-export" // the changed volume, with the base snapshot and the change list
	FullImport        Op = "full-import"        // the first snapshot onto a new target
	IncrementalImport Op = "incremental-import" // the second snapshot onto the target holding the first
)

// AllOps returns every operation in run order.
func AllOps() []Op { return []Op{FullExport, IncrementalExport, FullImport, IncrementalImport} }

// String names the operation for people.
func (o Op) String() string { return strings.ReplaceAll(string(o), "-", " ") }

// ParseOp reads an operation name.
func ParseOp(s string) (Op, error) {
	for _, o := range AllOps() {
		if string(o) == s {
			return o, nil
		}
	}
	return "", fmt.Errorf("unknown operation %q (want full-export, incremental-export, full-import or incremental-import)", s)
}

func (o Op) isExport() bool { return o == FullExport || o == IncrementalExport }

// BackendFunc opens the storage at a repository location (a directory, or
// s3://BUCKET/PREFIX if the function supports it), creating a directory
// if create is set.
type BackendFunc func(ctx context.Context, location string, create bool) (backend.Backend, error)

// DirBackend opens directory locations only.
func DirBackend(ctx context.Context, loc string, create bool) (backend.Backend, error) {
	if location.IsS3(loc) {
		return nil, fmt.Errorf("repository %s: only directories are supported here", loc)
	}
	return location.Open(ctx, loc, location.Options{Create: create})
}

// Backends opens directories, and s3://BUCKET/PREFIX locations with the
// endpoint and connection settings of base (its Bucket and Prefix come
// from the location), wrapped like the CLI's (location.Open).
func Backends(base s3.Options) BackendFunc {
	return func(ctx context.Context, loc string, create bool) (backend.Backend, error) {
		return location.Open(ctx, loc, location.Options{Create: create, S3: base, Connections: base.MaxConns})
	}
}

// Job is one measured operation as a child process receives it (on stdin,
// as JSON) or as this process runs it.
type Job struct {
	Op       Op       `json:"op"`
	Repo     string   `json:"repo"`
	Password string   `json:"password"`
	Settings Settings `json:"settings"`
	Scenario Scenario `json:"scenario"`
	Corpus   []string `json:"corpus,omitempty"`
	// Source is the file or device to export; empty: the scenario's
	// volume computed on the fly (the changed one for an incremental
	// export), reported sparse if Sparse is set.
	Source string `json:"source,omitempty"`
	Sparse bool   `json:"sparse,omitempty"`
	// Base: for an incremental export, the base snapshot; for an
	// incremental import, the snapshot the target holds.
	Base string `json:"base,omitempty"`
	// Snapshot to import, and the target file or device.
	Snapshot string `json:"snapshot,omitempty"`
	Target   string `json:"target,omitempty"`
}

// Stages are mover's stage times in seconds, summed over the workers (or
// requests) that ran each stage; see mover.Stages.
type Stages struct {
	Read          float64 `json:"read,omitempty"`
	ZeroCheck     float64 `json:"zero_check,omitempty"`
	Cut           float64 `json:"cut,omitempty"`
	Hash          float64 `json:"hash,omitempty"`
	Compress      float64 `json:"compress,omitempty"`
	Encrypt       float64 `json:"encrypt,omitempty"`
	Upload        float64 `json:"upload,omitempty"`
	Download      float64 `json:"download,omitempty"`
	DecryptVerify float64 `json:"decrypt_verify,omitempty"`
	Write         float64 `json:"write,omitempty"`
}

func stagesOf(s mover.Stages) Stages {
	return Stages{Read: s.Read.Seconds(), ZeroCheck: s.ZeroCheck.Seconds(), Cut: s.Cut.Seconds(), Hash: s.Hash.Seconds(),
		Compress: s.Compress.Seconds(), Encrypt: s.Encrypt.Seconds(), Upload: s.Upload.Seconds(), Download: s.Download.Seconds(), DecryptVerify: s.DecryptVerify.Seconds(), Write: s.Write.Seconds()}
}

// Sample is one measured run of one operation.
type Sample struct {
	// Seconds is the wall time as a user sees it: from starting the
	// process to its exit (a child run), or of the whole call, opening the
	// repository included (in-process).
	Seconds float64 `json:"seconds"`
	// ReturnedSeconds, for a peer's restore, is the wall time until the
	// tool returned; Seconds adds the fdatasync that makes the restored
	// volume durable, as mover's import does before it returns. 0: the
	// same as Seconds.
	ReturnedSeconds float64 `json:"returned_seconds,omitempty"`
	// PipelineSeconds is mover's own time for the operation
	// (ExportResult.Duration, ImportResult.Duration): without process
	// start-up and opening the repository (key derivation, index).
	PipelineSeconds float64 `json:"pipeline_seconds,omitempty"`
	UserCPU         float64 `json:"user_cpu"`
	SysCPU          float64 `json:"sys_cpu"`
	// PeakRSS is the peak resident memory in bytes (VmHWM): the child
	// process's own, or, in-process, this process's peak so far.
	PeakRSS int64 `json:"peak_rss"`

	ReadBytes    int64 `json:"read_bytes,omitempty"`
	ZeroBytes    int64 `json:"zero_bytes,omitempty"`
	NewBytes     int64 `json:"new_bytes,omitempty"`
	StoredBytes  int64 `json:"stored_bytes,omitempty"`
	ReusedBytes  int64 `json:"reused_bytes,omitempty"`
	WrittenBytes int64 `json:"written_bytes,omitempty"`
	ZeroedBytes  int64 `json:"zeroed_bytes,omitempty"`
	FetchedBytes int64 `json:"fetched_bytes,omitempty"`
	SkippedBytes int64 `json:"skipped_bytes,omitempty"`
	Chunks       int64 `json:"chunks,omitempty"`
	// RepoBytes is the repository's size after the operation (exports).
	RepoBytes int64 `json:"repo_bytes,omitempty"`

	Stages Stages `json:"stages"`
	// Parallelism of the stages: cutting and packing workers, uploads,
	// import workers.
	Workers   int `json:"workers,omitempty"`
	Uploads   int `json:"uploads,omitempty"`
	Downloads int `json:"downloads,omitempty"`
}

// CPU returns user plus system CPU seconds.
func (s Sample) CPU() float64 { return s.UserCPU + s.SysCPU }

// JobResult is what a job reports: the snapshot it made (exports) and its
// figures. Seconds, CPU and memory are filled in by whoever timed it.
type JobResult struct {
	Snapshot string `json:"snapshot,omitempty"`
	Sample   Sample `json:"sample"`
}

// ServeChild runs the one job read as JSON from in and writes its result
// as JSON to out: the body of `mover bench --child`, so that the parent
// can measure the job's CPU time and peak memory as a process of its own.
func ServeChild(ctx context.Context, in io.Reader, out io.Writer, open BackendFunc) error {
	var job Job
	dec := json.NewDecoder(io.LimitReader(in, 64<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&job); err != nil {
		return fmt.Errorf("bench job: %w", err)
	}
	res, err := RunJob(ctx, job, open)
	if err != nil {
		return err
	}
	res.Sample.PeakRSS = peakRSS("self")
	return json.NewEncoder(out).Encode(res)
}

// RunJob runs one job in this process.
func RunJob(ctx context.Context, job Job, open BackendFunc) (*JobResult, error) {
	if open == nil {
		open = DirBackend
	}
	be, err := open(ctx, job.Repo, false)
	if err != nil {
		return nil, err
	}
	defer be.Close()
	r, err := repo.Open(ctx, be, []byte(job.Password), repo.Options{Compression: job.Settings.Compression, Workers: job.Settings.Workers})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	switch job.Op {
	case FullExport, IncrementalExport:
		return runExport(ctx, job, r)
	case FullImport, IncrementalImport:
		return runImport(ctx, job, r)
	}
	return nil, fmt.Errorf("bench job: unknown operation %q", job.Op)
}

func runExport(ctx context.Context, job Job, r *repo.Repository) (*JobResult, error) {
	var corpus *Corpus
	if job.Scenario.Volume.File > 0 {
		var err error
		if corpus, err = NewCorpus(job.Corpus...); err != nil {
			return nil, err
		}
	}
	base, changed, err := job.Scenario.Build(corpus)
	if err != nil {
		return nil, err
	}
	incremental := job.Op == IncrementalExport
	var src mover.Source
	switch {
	case job.Source != "":
		d, err := mover.OpenSource(job.Source, isBlockDevice(job.Source))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		switch {
		case d.Size() < base.Size():
			return nil, fmt.Errorf("source %s holds %d bytes, the scenario %d", job.Source, d.Size(), base.Size())
		case d.Size() > base.Size():
			src = prefixSource{d, base.Size()} // the scenario fills the device's first bytes
		default:
			src = d
		}
	case incremental && job.Sparse:
		src = changed.Sparse()
	case incremental:
		src = changed
	case job.Sparse:
		src = base.Sparse()
	default:
		src = base
	}
	s := job.Settings
	opts := mover.ExportOptions{Volume: "bench", Source: "mover bench", Workers: s.Workers, Uploads: s.Uploads,
		Tags: map[string]string{"scenario": job.Scenario.Name}}
	if incremental {
		id, err := repo.ParseID(job.Base)
		if err != nil {
			return nil, err
		}
		if opts.Base, err = r.LoadSnapshot(ctx, id); err != nil {
			return nil, err
		}
		opts.Changes = changed.Changes()
	}
	res, err := mover.Export(ctx, src, r, opts)
	if err != nil {
		return nil, err
	}
	out := &JobResult{Snapshot: res.Snapshot.ID.String(), Sample: Sample{
		PipelineSeconds: res.Duration.Seconds(),
		ReadBytes:       res.ReadBytes, ZeroBytes: res.ZeroBytes, NewBytes: res.NewBytes, StoredBytes: res.StoredBytes,
		ReusedBytes: res.ReusedBytes, Chunks: res.Chunks, Stages: stagesOf(res.Stages),
		Workers: orDefault(s.Workers, gomaxprocs()), Uploads: orDefault(s.Uploads, 2),
	}}
	return out, nil
}

func runImport(ctx context.Context, job Job, r *repo.Repository) (*JobResult, error) {
	id, err := repo.ParseID(job.Snapshot)
	if err != nil {
		return nil, err
	}
	snap, err := r.LoadSnapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	opts := mover.ImportOptions{}
	if w := job.Settings.Workers; w > 0 {
		opts.Downloads = 2 * w
	}
	if job.Op == IncrementalImport {
		bid, err := repo.ParseID(job.Base)
		if err != nil {
			return nil, err
		}
		if opts.AssumeBase, err = r.LoadSnapshot(ctx, bid); err != nil {
			return nil, err
		}
	}
	if job.Target == "" {
		return nil, errors.New("bench job: an import needs a target")
	}
	dst, err := mover.OpenTarget(job.Target, snap.Size, mover.TargetOptions{Create: true})
	if err != nil {
		return nil, err
	}
	res, err := mover.Import(ctx, r, snap, dst, opts)
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return &JobResult{Snapshot: snap.ID.String(), Sample: Sample{
		PipelineSeconds: res.Duration.Seconds(),
		WrittenBytes:    res.WrittenBytes, ZeroedBytes: res.ZeroedBytes, FetchedBytes: res.FetchedBytes, SkippedBytes: res.SkippedBytes,
		Chunks: res.Chunks, Stages: stagesOf(res.Stages),
		Downloads: orDefault(opts.Downloads, max(4, 2*gomaxprocs())),
	}}, nil
}

// prefixSource is the first size bytes of a source.
type prefixSource struct {
	mover.Source
	size int64
}

func (p prefixSource) Size() int64 { return p.size }

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// since returns seconds since t.
func since(t time.Time) float64 { return time.Since(t).Seconds() }
