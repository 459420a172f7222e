package main

import (
	"context"
	"fmt"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

type importOptions struct {
	backend      backendOptions
	snapshot     string
	target       string
	targetZeroed bool
	create       bool
	assumeBase   string
	verifyTarget bool
}

func newImportCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o importOptions
	cmd := &cobra.Command{
		Use:   "import --snapshot ID|latest[:VOLUME] --target DEVICE",
		Short: "Write a snapshot onto a block device or image file",
		Long: `Write a snapshot onto a block device or image file. Every chunk is verified
against its ID before it is written. Regions that are zero in the snapshot are
made zero on the target (holes punched in files, BLKZEROOUT on devices) unless
--target-zeroed promises they already are. A block device is opened
exclusively and must be at least as large as the snapshot; a file is created
if missing and sized to the snapshot.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runImport(ctx, g, &o) },
	}
	f := cmd.Flags()
	o.backend.register(cmd)
	f.StringVar(&o.snapshot, "snapshot", "", "snapshot ID, unique ID prefix, latest or latest:VOLUME (required)")
	f.StringVar(&o.target, "target", "", "block device or file to write (required)")
	f.BoolVar(&o.targetZeroed, "target-zeroed", false, "the target already reads as zeros: skip zeroing holes")
	f.BoolVar(&o.create, "create", true, "create the target file if it does not exist")
	f.StringVar(&o.assumeBase, "assume-base", "", "the target already holds this snapshot: write only what differs")
	f.BoolVar(&o.verifyTarget, "verify-target", false, "read the target and write only what differs from the snapshot")
	cmd.MarkFlagsMutuallyExclusive("assume-base", "verify-target")
	cmd.MarkFlagRequired("snapshot")
	cmd.MarkFlagRequired("target")
	return cmd
}

// importJSON is the result object of `mover import --json`.
type importJSON struct {
	Snapshot     string            `json:"snapshot"`
	Volume       string            `json:"volume"`
	Size         int64             `json:"size"`
	WrittenBytes int64             `json:"written_bytes"`
	ZeroedBytes  int64             `json:"zeroed_bytes"`
	FetchedBytes int64             `json:"fetched_bytes"`
	SkippedBytes int64             `json:"skipped_bytes,omitempty"`
	Seconds      float64           `json:"seconds"`
	MBPerSecond  float64           `json:"mb_per_s"`
	Stages       map[string]string `json:"stages"`
}

func runImport(ctx context.Context, g *globalOptions, o *importOptions) error {
	r, err := g.openRepo(ctx, o.backend, repo.Options{})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	snap, err := g.findSnapshot(ctx, r, o.snapshot)
	if err != nil {
		return err
	}
	var base *repo.Snapshot
	if o.assumeBase != "" {
		if base, err = g.findSnapshot(ctx, r, o.assumeBase); err != nil {
			return fmt.Errorf("--assume-base: %w", err)
		}
	}
	dst, err := mover.OpenTarget(o.target, snap.Size, mover.TargetOptions{Create: o.create})
	if err != nil {
		return err
	}
	defer dst.Close()
	loc, _ := g.location() // openRepo succeeded with it
	res, err := mover.Import(ctx, r, snap, dst, mover.ImportOptions{
		TargetZeroed: o.targetZeroed, Downloads: o.backend.downloads(loc),
		AssumeBase: base, VerifyTarget: o.verifyTarget,
		Progress: g.progressFunc("import"),
	})
	if err != nil {
		return err
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("closing target: %w", err)
	}
	out := importJSON{
		Snapshot: snap.ID.String(), Volume: snap.Volume, Size: res.Size,
		WrittenBytes: res.WrittenBytes, ZeroedBytes: res.ZeroedBytes, FetchedBytes: res.FetchedBytes,
		SkippedBytes: res.SkippedBytes,
		Seconds:      res.Duration.Seconds(), MBPerSecond: float64(res.Size) / 1e6 / res.Duration.Seconds(),
		Stages: stageMap(res.Stages),
	}
	g.pod.imported(out, res)
	if g.json {
		return g.printJSON(out)
	}
	fmt.Fprintf(g.env.stdout, "imported snapshot %s of %s onto %s: %s in %.1fs (%.0f MB/s); written %s, zeroed %s\n",
		snap.ID.Short(), snap.Volume, o.target, humanBytes(res.Size), out.Seconds, out.MBPerSecond,
		humanBytes(res.WrittenBytes), humanBytes(res.ZeroedBytes))
	return nil
}
