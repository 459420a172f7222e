package main

import (
	"context"
	"fmt"

	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/mover"
	"github.com/spf13/cobra"
)

type diffOptions struct {
	blockSize string
	workers   int
}

func newDiffCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o diffOptions
	cmd := &cobra.Command{
		Use:   "diff BASE_DEVICE TARGET_DEVICE",
		Short: "Compare two devices and print where they differ, as a change list",
		Long: `Compare two devices (or image files) in parallel and print the extents where
TARGET differs from BASE as JSON in the Kubernetes SnapshotMetadata shape, which
mover export --changes reads: a change list for storage without changed-block
tracking. A summary goes to stderr unless -q.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return runDiff(ctx, g, &o, args[0], args[1]) },
	}
	cmd.Flags().StringVar(&o.blockSize, "block-size", "64KiB", "comparison granularity")
	cmd.Flags().IntVar(&o.workers, "workers", 0, "parallel readers (default: all cores)")
	return cmd
}

func runDiff(ctx context.Context, g *globalOptions, o *diffOptions, basePath, targetPath string) error {
	bs, err := units.ParseSize(o.blockSize)
	if err != nil || bs < 512 || bs > 64<<20 {
		return usagef("--block-size %q: want 512 bytes to 64 MiB", o.blockSize)
	}
	if err := checkCount("workers", o.workers, maxWorkers); err != nil {
		return err
	}
	base, err := mover.OpenSource(basePath, true)
	if err != nil {
		return err
	}
	defer base.Close()
	target, err := mover.OpenSource(targetPath, true)
	if err != nil {
		return err
	}
	defer target.Close()
	cl, err := changes.Diff(ctx, base, target, changes.DiffOptions{BlockSize: bs, Workers: o.workers})
	if err != nil {
		return err
	}
	if err := g.printJSON(cl.SnapshotMetadata(target.Size())); err != nil {
		return err
	}
	if !g.quiet {
		fmt.Fprintf(g.env.stderr, "mover diff: %s, %s of %s changed\n", units.Plural(len(cl), "extent"), units.Bytes(cl.Bytes()), units.Bytes(target.Size()))
	}
	return nil
}
