package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

type exportOptions struct {
	backend     backendOptions
	source      string
	name        string
	tags        []string
	workers     int
	packSize    string
	compression string
	keepCache   bool
	base        string
	verify      float64
	changes     string
	changesFmt  string
}

func newExportCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o exportOptions
	cmd := &cobra.Command{
		Use:   "export --source DEVICE --name VOLUME",
		Short: "Export a block device or image file as a new snapshot",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return runExport(ctx, g, &o) },
	}
	f := cmd.Flags()
	o.backend.register(cmd)
	g.registerRepo(cmd)
	f.StringVar(&o.source, "source", "", "block device or regular file to export (required)")
	volumeFlag(cmd, &o.name, "volume name the snapshot is filed under (required; alias --name): 1 to 255 bytes without \"/\" or control characters")
	f.StringArrayVar(&o.tags, "tag", nil, "tag the snapshot with key=value (repeatable)")
	f.IntVar(&o.workers, "workers", 0, "CPU workers that cut, hash, compress and encrypt (default: all cores)")
	f.StringVar(&o.packSize, "pack-size", "", "target pack size for this export (default: the repository's)")
	f.StringVar(&o.compression, "compression", repo.CompressFastest, "zstd level: fastest, default or better")
	f.BoolVar(&o.keepCache, "keep-cache", false, "leave read pages in the page cache (default: drop them, so a pod's memory limit is not filled)")
	f.StringVar(&o.base, "base", "", "make the export incremental: a snapshot of the volume (ID, prefix, latest or latest:VOLUME) whose unchanged chunks are reused")
	f.StringVar(&o.changes, "changes", "", "with --base: a change list of the extents that may differ from the base (SnapshotMetadata, rbd diff or EBS JSON); only they are read")
	f.StringVar(&o.changesFmt, "changes-format", "", "format of --changes: snapshot-metadata, rbd or ebs (default: detected)")
	f.Float64Var(&o.verify, "verify-unchanged", 0, "with --changes: re-read this fraction (0..1) of the chunks the change list calls unchanged, and fail if any differ")
	cmd.MarkFlagRequired("source")
	cmd.MarkFlagRequired("volume")
	g.pod.attach(ctx, g, cmd)
	return cmd
}

// exportJSON is the result object of `mover export --json`.
// exportJSON is what export --json prints (mover.ExportReport, the
// contract with control planes).
type exportJSON = mover.ExportReport

func parseTags(tags []string) (map[string]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return nil, usagef("--tag %q: want key=value", t)
		}
		m[k] = v
	}
	return m, nil
}

// validate checks the flags that need no repository, and returns the
// tags and the pack size (0: the repository's) they give.
func (o *exportOptions) validate() (map[string]string, int64, error) {
	tags, err := parseTags(o.tags)
	if err != nil {
		return nil, 0, err
	}
	if err := repo.CheckVolumeName(o.name); err != nil {
		return nil, 0, usagef("--volume: %v (want 1 to %d bytes of UTF-8 without \"/\" or control characters)", err, repo.MaxVolumeName)
	}
	if err := checkCount("workers", o.workers, maxWorkers); err != nil {
		return nil, 0, err
	}
	if err := checkCount("connections", o.backend.connections, maxConnections); err != nil {
		return nil, 0, err
	}
	var packSize int64
	if o.packSize != "" {
		if packSize, err = units.ParseSize(o.packSize); err != nil {
			return nil, 0, usagef("--pack-size: %v", err)
		}
		if packSize < repo.MinPackSize || packSize > repo.MaxPackSize {
			return nil, 0, usagef("--pack-size %s: want %s to %s", o.packSize, units.Bytes(repo.MinPackSize), units.Bytes(repo.MaxPackSize))
		}
	}
	if err := checkShare("verify-unchanged", o.verify); err != nil {
		return nil, 0, err
	}
	if (o.changes != "" || o.verify > 0) && o.base == "" {
		return nil, 0, usagef("--changes and --verify-unchanged need --base")
	}
	return tags, packSize, nil
}

// readChanges parses --changes for a volume of size bytes; nil without it.
func (o *exportOptions) readChanges(size int64) (changes.ChangeList, error) {
	if o.changes == "" {
		return nil, nil
	}
	f, err := os.Open(o.changes)
	if err != nil {
		return nil, fmt.Errorf("--changes: %w", err)
	}
	defer f.Close()
	cl, err := changes.ParseChanges(f, o.changesFmt, size)
	if err != nil {
		return nil, fmt.Errorf("--changes %s: %w", o.changes, err)
	}
	return cl, nil
}

func runExport(ctx context.Context, g *globalOptions, o *exportOptions) error {
	tags, packSize, err := o.validate()
	if err != nil {
		return err
	}
	if o.workers == 0 {
		o.workers = cpus() // fixed before spareProc
	}
	src, err := mover.OpenSource(o.source, !o.keepCache)
	if err != nil {
		return unsuitable(err)
	}
	defer src.Close()
	if mnt := src.MountedAt(); mnt != "" {
		warnf(g.env.stderr, "%s is mounted at %s: the export is crash-consistent at best; export a snapshot or clone instead", o.source, mnt)
	}
	loc, err := g.location()
	if err != nil {
		return err
	}
	// The memory limit is set before the index loads (a large index is
	// most of the memory), from an upper bound the load gives first.
	unlimit := func() {}
	defer func() { unlimit() }()
	memOpts := mover.ExportOptions{Workers: o.workers, Uploads: o.backend.uploads(loc), PackSize: int(packSize)}
	estimate := func(cfg repo.Config, blobs int) {
		// The index grows by at most one entry per minimum-size chunk.
		blobs += int(src.Size() / int64(max(cfg.Chunking.MinChunk(), 1)))
		unlimit = g.limitMemory(mover.ExportMemory(memOpts, cfg) + int64(blobs)*indexBytesPerBlob)
	}
	r, err := g.openRepo(ctx, o.backend, repo.Options{Compression: o.compression, Workers: o.workers, IndexEstimate: estimate, IndexCache: g.indexCacheDir()})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	var base *repo.Snapshot
	if o.base != "" {
		if base, err = g.findSnapshot(ctx, r, o.base); err != nil {
			return fmt.Errorf("--base: %w", err)
		}
		if base.Volume != o.name {
			warnf(g.env.stderr, "base snapshot %s is of volume %q, not %q", base.ID.Short(), base.Volume, o.name)
		}
	}
	changeList, err := o.readChanges(src.Size())
	if err != nil {
		return err
	}
	eo := mover.ExportOptions{
		Volume: o.name, Source: o.source, Tags: tags, Base: base, Changes: changeList, VerifyUnchanged: o.verify,
		Workers: o.workers, Uploads: o.backend.uploads(loc), PackSize: int(packSize),
		Progress: g.progressFunc("export"),
	}
	g.pod.volumeKnown(o.name, src.Size())
	restore := spareProc()
	res, err := mover.Export(ctx, src, r, eo)
	restore()
	if err != nil {
		return err
	}
	parent := ""
	if base != nil {
		parent = base.ID.String()
	}
	out := res.Report(o.name, parent)
	g.pod.exported(out, res)
	if g.json {
		return g.printJSON(out)
	}
	fmt.Fprintf(g.env.stdout, "snapshot %s of %s: %s in %.1fs (%s); read %s, zeros %s, new %s, stored %s\n",
		res.Snapshot.ID.Short(), o.name, units.Bytes(res.Size), out.Seconds, units.Rate(float64(res.Size)/res.Duration.Seconds()),
		units.Bytes(res.ReadBytes), units.Bytes(res.ZeroBytes), units.Bytes(res.NewBytes), units.Bytes(res.StoredBytes))
	return nil
}
