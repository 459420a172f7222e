package main

import (
	"context"
	"fmt"
	"time"

	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type gcOptions struct {
	backend backendOptions
	grace   time.Duration
	repack  float64
	dryRun  bool
	stale   time.Duration
}

func newGCCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o gcOptions
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete data no snapshot needs, safely beside running exports",
		Long: `Mark every chunk that any snapshot needs, repack packs that are mostly garbage,
and delete packs that were unreferenced at two gc runs at least --grace apart
(by the storage's clock); packs younger than --grace are kept whole, so the
rerun of an interrupted export reuses them. Exports and imports may run
meanwhile, as long as none takes longer than --grace. --grace 0 deletes at
once: only when nothing else uses the repository.

gc is safe to kill at any point (OOM, eviction, SIGKILL): the repository stays
valid and the next gc finishes the work. It holds the repository's maintenance
lease while it runs (forget and repair index take the same lease); a lease
left by a killed command is taken over once it has not been renewed for
--stale-lock, or at once when its holder was a process on this machine that
no longer runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runGC(ctx, g, &o) },
	}
	o.backend.register(cmd)
	g.registerRepo(cmd)
	f := cmd.Flags()
	f.DurationVar(&o.grace, "grace", repo.DefaultGrace, "minimum age of a condemned pack before it is deleted; longer than any export")
	f.Float64Var(&o.repack, "repack-threshold", 0.1, "repack packs whose garbage is at least this fraction")
	f.BoolVar(&o.dryRun, "dry-run", false, "report what would be done, change nothing")
	registerStaleLock(f, &o.stale)
	g.pod.attach(ctx, g, cmd)
	return cmd
}

func runGC(ctx context.Context, g *globalOptions, o *gcOptions) error {
	if o.grace < 0 {
		return usagef("--grace %v: must not be negative", o.grace)
	}
	if o.stale <= 0 {
		return usagef("--stale-lock %v: must be positive", o.stale)
	}
	if err := checkFraction("repack-threshold", o.repack); err != nil {
		return err
	}
	r, err := g.openRepo(ctx, o.backend, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	opts := repo.GCOptions{Grace: o.grace, RepackThreshold: o.repack, DryRun: o.dryRun, StaleLease: o.stale}
	if l := g.pod.structuredLog(); l != nil {
		opts.Log = func(s string) { l.Info("gc: " + s) }
	} else if !g.json && !g.quiet {
		opts.Log = func(s string) { fmt.Fprintln(g.env.stderr, "gc:", s) }
	}
	res, err := r.GC(ctx, opts)
	if err != nil {
		return err
	}
	g.pod.collected(res)
	if g.json {
		return g.printJSON(res)
	}
	verb := "deleted"
	if o.dryRun {
		verb = "would delete"
	}
	fmt.Fprintf(g.env.stdout, "%s, %s live (%s) in %s; %s %s (%s), repacked %d; condemned packs waiting for the grace period: %d; packs younger than it, kept: %d\n",
		units.Plural(res.Snapshots, "snapshot"), units.Plural(int(res.LiveBlobs), "blob"), units.Bytes(res.LiveBytes), units.Plural(res.Packs, "pack"), verb, units.Plural(res.Deleted, "pack"), units.Bytes(res.DeletedBytes), res.Repacked, res.Waiting, res.Young)
	return nil
}

// registerStaleLock adds --stale-lock to a command that takes the
// repository's maintenance lease.
func registerStaleLock(f *pflag.FlagSet, d *time.Duration) {
	f.DurationVar(d, "stale-lock", repo.DefaultStaleLease, "take over the maintenance lease of gc, forget or repair index when its holder has not renewed it for this long (a killed command's lease)")
}
