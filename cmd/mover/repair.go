package main

import (
	"context"
	"fmt"
	"time"

	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

type repairOptions struct {
	backend       backendOptions
	staleLock     time.Duration
	readData      bool
	writeRepaired bool
	forgetDamaged bool
}

func newRepairCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o repairOptions
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Rebuild the index from packs, or find and repair damaged snapshots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("repair needs a subcommand: index or snapshots")
		},
	}
	o.backend.register(cmd)
	g.registerRepo(cmd)
	registerStaleLock(cmd.Flags(), &o.staleLock)
	index := &cobra.Command{
		Use:   "index",
		Short: "Rebuild the index from the pack headers, keeping what the old index knows of damaged packs",
		Long: `Rebuild the index: every pack is indexed from its own header; a pack whose
header is damaged keeps the entries the old index files give it, each blob
verified by decrypting it. Entries of packs that do not exist are dropped.
Nothing that can still be read is ever dropped from the index.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runRepairIndex(ctx, g, &o) },
	}
	snaps := &cobra.Command{
		Use:   "snapshots",
		Short: "Report snapshots that cannot be restored whole; optionally repair or forget them",
		Long: `Report every snapshot that cannot be restored whole: its file is unreadable,
a page or a chunk is in no existing pack, or (--read-data) does not verify;
and which byte ranges of the volume are lost. Nothing is changed unless asked:
--write-repaired replaces each damaged snapshot by a copy in which the lost
ranges restore as zeros (the copy lists them: mover snapshots shows it);
--forget-damaged forgets the damaged snapshots instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runRepairSnapshots(ctx, g, &o) },
	}
	snaps.Flags().BoolVar(&o.readData, "read-data", false, "read and verify every chunk, not only that the index places it in an existing pack")
	snaps.Flags().BoolVar(&o.writeRepaired, "write-repaired", false, "replace each damaged snapshot by a copy whose lost ranges restore as zeros")
	snaps.Flags().BoolVar(&o.forgetDamaged, "forget-damaged", false, "forget the damaged snapshots")
	for _, c := range []*cobra.Command{index, snaps} {
		c.Flags().AddFlagSet(cmd.Flags())
	}
	cmd.AddCommand(index, snaps)
	return cmd
}

func runRepairIndex(ctx context.Context, g *globalOptions, o *repairOptions) error {
	if o.staleLock <= 0 {
		return usagef("--stale-lock %v: must be positive", o.staleLock)
	}
	r, err := g.openRepo(ctx, o.backend, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	res, err := r.RepairIndex(ctx, repo.RepairIndexOptions{Workers: o.backend.connections, StaleLease: o.staleLock})
	if err != nil {
		return err
	}
	lost := 0
	for _, sp := range res.Salvaged {
		lost += sp.Lost
	}
	if g.json {
		if err := g.printJSON(res); err != nil {
			return err
		}
	} else {
		for _, p := range res.Damaged {
			fmt.Fprintf(g.env.stdout, "damaged index file (replaced): %s\n", p)
		}
		for _, sp := range res.Salvaged {
			fmt.Fprintf(g.env.stdout, "pack %s: header unreadable (%s); kept %s that verify, lost %d\n", sp.Pack.Short(), sp.Err, units.Plural(sp.Kept, "blob"), sp.Lost)
		}
		for _, p := range res.Unreadable {
			fmt.Fprintf(g.env.stdout, "unreadable, and no old index entry describes it: %s\n", p)
		}
		if res.MissingRefs > 0 {
			fmt.Fprintf(g.env.stdout, "dropped %s of packs that do not exist\n", units.Plural(res.MissingRefs, "entry", "entries"))
		}
		fmt.Fprintf(g.env.stdout, "indexed %s in %s into %s (replaced %d); read %s of headers\n",
			units.Plural(res.Blobs, "blob"), units.Plural(res.Packs, "pack"), units.Plural(res.IndexFiles, "index file"), res.Replaced, units.Bytes(res.HeaderBytes))
	}
	if len(res.Unreadable) > 0 || lost > 0 || res.MissingRefs > 0 {
		return fmt.Errorf("the index is rebuilt, but unreadable packs: %d, blobs that did not verify: %d, entries naming missing packs: %d; run mover repair snapshots to see which snapshots are affected", len(res.Unreadable), lost, res.MissingRefs)
	}
	return nil
}

func runRepairSnapshots(ctx context.Context, g *globalOptions, o *repairOptions) error {
	if o.writeRepaired && o.forgetDamaged {
		return usagef("--write-repaired and --forget-damaged exclude each other")
	}
	if o.staleLock <= 0 {
		return usagef("--stale-lock %v: must be positive", o.staleLock)
	}
	r, err := g.openRepo(ctx, o.backend, repo.Options{})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	if err := g.repairSummaries(ctx, r); err != nil {
		return err
	}
	damaged, err := r.DamagedSnapshots(ctx, repo.DamageOptions{ReadData: o.readData})
	if err != nil {
		return err
	}
	var repaired []*repo.Snapshot
	switch {
	case o.writeRepaired:
		if repaired, err = r.RepairSnapshots(ctx, damaged, o.staleLock); err != nil {
			return err
		}
	case o.forgetDamaged:
		ids := make([]repo.ID, len(damaged))
		for i, d := range damaged {
			ids[i] = d.Snapshot
		}
		if err := r.Forget(ctx, ids, o.staleLock); err != nil {
			return err
		}
	}
	if g.json {
		out := struct {
			Damaged   []repo.SnapshotDamage `json:"damaged"`
			Repaired  []string              `json:"repaired,omitempty"`
			Forgotten bool                  `json:"forgotten,omitempty"`
		}{Damaged: damaged, Forgotten: o.forgetDamaged && len(damaged) > 0}
		if out.Damaged == nil {
			out.Damaged = []repo.SnapshotDamage{}
		}
		for _, s := range repaired {
			out.Repaired = append(out.Repaired, s.ID.String())
		}
		if err := g.printJSON(out); err != nil {
			return err
		}
	} else {
		printDamage(g, damaged)
		for i, s := range repaired {
			fmt.Fprintf(g.env.stdout, "snapshot %s replaced by %s: %s restore as zeros\n", damaged[i].Snapshot.Short(), s.ID.Short(), units.Bytes(damaged[i].MissingBytes))
		}
		if o.forgetDamaged && len(damaged) > 0 {
			fmt.Fprintf(g.env.stdout, "forgot %d damaged snapshots; mover gc frees their data\n", len(damaged))
		}
		if len(damaged) == 0 {
			fmt.Fprintln(g.env.stdout, "every snapshot can be restored whole")
		}
	}
	if len(damaged) > 0 && !o.writeRepaired && !o.forgetDamaged {
		return fmt.Errorf("%s cannot be restored whole (nothing was changed; --write-repaired or --forget-damaged changes them)", units.Plural(len(damaged), "snapshot"))
	}
	return nil
}

// repairSummaries rewrites the damaged snapshot summaries. Summaries are
// derived from the snapshot files: rewriting one changes no snapshot.
func (g *globalOptions) repairSummaries(ctx context.Context, r *repo.Repository) error {
	n, err := r.RepairSummaries(ctx)
	if err != nil {
		return err
	}
	if n > 0 && !g.json {
		fmt.Fprintf(g.env.stdout, "rewrote %s from their snapshot files\n", units.Plural(n, "damaged snapshot summary", "damaged snapshot summaries"))
	}
	return nil
}

func printDamage(g *globalOptions, damaged []repo.SnapshotDamage) {
	for _, d := range damaged {
		if d.Err != "" {
			fmt.Fprintf(g.env.stdout, "snapshot %s: unreadable: %s\n", d.Snapshot.Short(), d.Err)
			continue
		}
		fmt.Fprintf(g.env.stdout, "snapshot %s (%s): %s, %s missing, %s of the volume lost in %s\n",
			d.Snapshot.Short(), d.Volume, units.Plural(len(d.MissingPages), "page"), units.Plural(len(d.MissingChunks), "chunk"), units.Bytes(d.MissingBytes), units.Plural(len(d.Ranges), "range"))
		for i, rg := range d.Ranges {
			if i == 10 {
				fmt.Fprintf(g.env.stdout, "  … %d more ranges\n", len(d.Ranges)-10)
				break
			}
			fmt.Fprintf(g.env.stdout, "  lost bytes %d..%d\n", rg.Offset, rg.Offset+rg.Length)
		}
	}
}
