package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/blockmover/blockmover/changes"
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
	f.StringVar(&o.source, "source", "", "block device or regular file to export (required)")
	f.StringVar(&o.name, "name", "", "volume name the snapshot is filed under (required): 1 to 255 bytes without \"/\" or control characters")
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
	cmd.MarkFlagRequired("name")
	return cmd
}

// exportJSON is the result object of `mover export --json`.
type exportJSON struct {
	Snapshot    string            `json:"snapshot"`
	Volume      string            `json:"volume"`
	Size        int64             `json:"size"`
	ReadBytes   int64             `json:"read_bytes"`
	ZeroBytes   int64             `json:"zero_bytes"`
	NewBytes    int64             `json:"new_bytes"`
	StoredBytes int64             `json:"stored_bytes"`
	ReusedBytes int64             `json:"reused_bytes,omitempty"`
	Parent      string            `json:"parent,omitempty"`
	Chunks      int64             `json:"chunks"`
	NewChunks   int64             `json:"new_chunks"`
	Seconds     float64           `json:"seconds"`
	MBPerSecond float64           `json:"mb_per_s"`
	Stages      map[string]string `json:"stages"`
}

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

func runExport(ctx context.Context, g *globalOptions, o *exportOptions) error {
	tags, err := parseTags(o.tags)
	if err != nil {
		return err
	}
	if err := repo.CheckVolumeName(o.name); err != nil {
		return usagef("--name: %v (want 1 to %d bytes of UTF-8 without \"/\" or control characters)", err, repo.MaxVolumeName)
	}
	if err := checkCount("workers", o.workers, maxWorkers); err != nil {
		return err
	}
	if err := checkCount("connections", o.backend.connections, maxConnections); err != nil {
		return err
	}
	var packSize int64
	if o.packSize != "" {
		if packSize, err = parseSize(o.packSize); err != nil {
			return usagef("--pack-size: %v", err)
		}
		if packSize < repo.MinPackSize || packSize > repo.MaxPackSize {
			return usagef("--pack-size %s: want %s to %s", o.packSize, humanBytes(repo.MinPackSize), humanBytes(repo.MaxPackSize))
		}
	}
	if err := checkShare("verify-unchanged", o.verify); err != nil {
		return err
	}
	if (o.changes != "" || o.verify > 0) && o.base == "" {
		return usagef("--changes and --verify-unchanged need --base")
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
	r, err := g.openRepo(ctx, o.backend, repo.Options{Compression: o.compression, Workers: o.workers})
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
	var changeList changes.ChangeList
	if o.changes != "" {
		f, err := os.Open(o.changes)
		if err != nil {
			return fmt.Errorf("--changes: %w", err)
		}
		changeList, err = changes.ParseChanges(f, o.changesFmt, src.Size())
		f.Close()
		if err != nil {
			return fmt.Errorf("--changes %s: %w", o.changes, err)
		}
	}
	eo := mover.ExportOptions{
		Volume: o.name, Source: o.source, Tags: tags, Base: base, Changes: changeList, VerifyUnchanged: o.verify,
		Workers: o.workers, Uploads: o.backend.uploads(loc), PackSize: int(packSize),
		Progress: g.progressFunc("export"),
	}
	// The index grows by at most one entry per minimum-size chunk.
	blobs := int64(r.IndexLen()) + src.Size()/int64(max(r.Config().Chunking.MinChunk(), 1))
	defer g.limitMemory(mover.ExportMemory(eo, r.Config()) + blobs*indexBytesPerBlob)()
	g.pod.volumeKnown(o.name, src.Size())
	res, err := mover.Export(ctx, src, r, eo)
	if err != nil {
		return err
	}
	out := exportJSON{
		Snapshot: res.Snapshot.ID.String(), Volume: o.name, Size: res.Size,
		ReadBytes: res.ReadBytes, ZeroBytes: res.ZeroBytes, NewBytes: res.NewBytes, StoredBytes: res.StoredBytes,
		ReusedBytes: res.ReusedBytes,
		Chunks:      res.Chunks, NewChunks: res.NewChunks, Seconds: res.Duration.Seconds(),
		MBPerSecond: float64(res.Size) / 1e6 / res.Duration.Seconds(), Stages: stageMap(res.Stages),
	}
	if base != nil {
		out.Parent = base.ID.String()
	}
	g.pod.exported(out, res)
	if g.json {
		return g.printJSON(out)
	}
	fmt.Fprintf(g.env.stdout, "snapshot %s of %s: %s in %.1fs (%.0f MB/s); read %s, zeros %s, new %s, stored %s\n",
		res.Snapshot.ID.Short(), o.name, humanBytes(res.Size), out.Seconds, out.MBPerSecond,
		humanBytes(res.ReadBytes), humanBytes(res.ZeroBytes), humanBytes(res.NewBytes), humanBytes(res.StoredBytes))
	return nil
}

func stageMap(s mover.Stages) map[string]string {
	m := map[string]string{}
	s.Each(func(k string, d time.Duration) {
		if d > 0 {
			m[k] = fmt.Sprintf("%.3fs", d.Seconds())
		}
	})
	return m
}
