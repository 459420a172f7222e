package main

import (
	"context"
	"fmt"

	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

func newRepairCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var bo backendOptions
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Rebuild the index from packs, or report damaged snapshots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("repair needs a subcommand: index or snapshots")
		},
	}
	bo.register(cmd)
	index := &cobra.Command{
		Use:   "index",
		Short: "Rebuild the index from the pack headers alone, replacing every index file",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return runRepairIndex(ctx, g, bo) },
	}
	snaps := &cobra.Command{
		Use:   "snapshots",
		Short: "Report which snapshots reference missing chunks, and which (changes nothing)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return runRepairSnapshots(ctx, g, bo) },
	}
	for _, c := range []*cobra.Command{index, snaps} {
		c.Flags().AddFlagSet(cmd.Flags())
	}
	cmd.AddCommand(index, snaps)
	return cmd
}

func runRepairIndex(ctx context.Context, g *globalOptions, bo backendOptions) error {
	r, err := g.openRepo(ctx, bo, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	res, err := r.RepairIndex(ctx, bo.connections)
	if err != nil {
		return err
	}
	if g.json {
		if err := g.printJSON(res); err != nil {
			return err
		}
	} else {
		for _, p := range res.Unreadable {
			fmt.Fprintf(g.env.stdout, "unreadable: %s\n", p)
		}
		fmt.Fprintf(g.env.stdout, "indexed %d blobs in %d packs into %d index files (replaced %d); read %s of headers\n",
			res.Blobs, res.Packs, res.IndexFiles, res.Replaced, humanBytes(res.HeaderBytes))
	}
	if len(res.Unreadable) > 0 {
		return fmt.Errorf("%d packs have unreadable headers and were left out of the index, the first: %s", len(res.Unreadable), res.Unreadable[0])
	}
	return nil
}

func runRepairSnapshots(ctx context.Context, g *globalOptions, bo backendOptions) error {
	r, err := g.openRepo(ctx, bo, repo.Options{})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	damaged, err := r.DamagedSnapshots(ctx)
	if err != nil {
		return err
	}
	if g.json {
		if damaged == nil {
			damaged = []repo.SnapshotDamage{}
		}
		if err := g.printJSON(damaged); err != nil {
			return err
		}
	} else {
		for _, d := range damaged {
			if d.Err != "" {
				fmt.Fprintf(g.env.stdout, "snapshot %s: unreadable: %s\n", d.Snapshot.Short(), d.Err)
				continue
			}
			fmt.Fprintf(g.env.stdout, "snapshot %s (%s): %d missing pages, %d missing chunks, %s of the volume affected\n",
				d.Snapshot.Short(), d.Volume, len(d.MissingPages), len(d.MissingChunks), humanBytes(d.MissingBytes))
			for i, id := range d.MissingChunks {
				if i == 10 {
					fmt.Fprintf(g.env.stdout, "  … %d more\n", len(d.MissingChunks)-10)
					break
				}
				fmt.Fprintf(g.env.stdout, "  missing chunk %s\n", id)
			}
		}
		if len(damaged) == 0 {
			fmt.Fprintln(g.env.stdout, "every snapshot has all its pages and chunks")
		}
	}
	if len(damaged) > 0 {
		return fmt.Errorf("%d snapshots reference missing data (nothing was changed)", len(damaged))
	}
	return nil
}
