package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/blockmover/blockmover/csi/velero"
	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

// forgetBackupsOptions are the flags of `mover controller forget-backups`,
// the Job the controller runs to forget the snapshots of deleted Velero
// backups.
type forgetBackupsOptions struct {
	backend   backendOptions
	live      []string
	deleted   []string
	orphans   bool
	before    string
	grace     time.Duration
	dryRun    bool
	staleLock time.Duration
}

// forgetBackupsJSON is the command's result (and termination message:
// counts, and at most maxListedBackups names, to stay within 4 KiB).
type forgetBackupsJSON struct {
	Removed int      `json:"removed"`
	Kept    int      `json:"kept"`
	Backups []string `json:"backups"`
	DryRun  bool     `json:"dry_run,omitempty"`
}

const maxListedBackups = 50

func newForgetBackupsCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o forgetBackupsOptions
	cmd := &cobra.Command{
		Use:   "forget-backups --before TIME [--live NAME…] [--deleted NAME…] [--orphans --grace D]",
		Short: "Forget the snapshots of deleted Velero backups (run by the controller as a Job)",
		Long: `Forget the snapshots tagged velero.io/backup-name whose Backup is gone: those of
the --deleted backups, and with --orphans those of every backup not --live,
once older than --grace. Snapshots written at or after --before, untagged ones
and those of --live backups are kept. The controller lists the Backups and
runs this as a Job (docs/velero.md, "Backup deletion"); data goes at the next
gc. Safe to kill: a rerun finishes the work.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runForgetBackups(ctx, g, &o) },
	}
	f := cmd.Flags()
	o.backend.register(cmd)
	g.registerRepo(cmd)
	f.StringSliceVar(&o.live, "live", nil, "name of a Backup that exists (repeat)")
	f.StringSliceVar(&o.deleted, "deleted", nil, "name of a Backup that Velero deleted (repeat)")
	f.BoolVar(&o.orphans, "orphans", false, "also forget the snapshots of Backups neither --live nor --deleted, older than --grace")
	f.StringVar(&o.before, "before", "", "RFC 3339 time the Backups were listed at: newer snapshots are kept (required)")
	f.DurationVar(&o.grace, "grace", 24*time.Hour, "minimum age of an orphan snapshot before --before")
	f.BoolVar(&o.dryRun, "dry-run", false, "only report what would be forgotten")
	registerStaleLock(f, &o.staleLock)
	g.pod.attach(ctx, g, cmd)
	return cmd
}

func runForgetBackups(ctx context.Context, g *globalOptions, o *forgetBackupsOptions) error {
	before, err := time.Parse(time.RFC3339, o.before)
	switch {
	case o.before == "":
		return usagef("--before is required")
	case err != nil:
		return usagef("--before %q: want an RFC 3339 time", o.before)
	case o.grace < 0:
		return usagef("--grace %v: must not be negative", o.grace)
	case o.staleLock <= 0:
		return usagef("--stale-lock %v: must be positive", o.staleLock)
	}
	rule := velero.ForgetRule{Live: nameSet(o.live), Deleted: nameSet(o.deleted), Orphans: o.orphans, Before: before, Grace: o.grace}
	r, err := g.openRepo(ctx, o.backend, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	snaps, damaged, err := r.ReadSnapshots(ctx)
	if err != nil {
		return err
	}
	for _, d := range damaged {
		warnf(g.env.stderr, "skipping damaged snapshot file %s (%v): forget it by ID or repair it", d.Key(), d.Err)
	}
	out := forgetBackupsJSON{Backups: []string{}, DryRun: o.dryRun}
	var ids []repo.ID
	names := map[string]bool{}
	for _, s := range snaps {
		forget, why := rule.Forget(s)
		if !forget {
			out.Kept++
			continue
		}
		ids = append(ids, s.ID)
		names[s.Tags[velero.LabelBackupName]] = true
		if !g.json && !g.quiet {
			fmt.Fprintf(g.env.stdout, "remove %s %s: %s\n", s.ID.Short(), describeSnapshot(s), why)
		}
	}
	if !o.dryRun {
		if err := r.Forget(ctx, ids, o.staleLock); err != nil {
			return err
		}
	}
	out.Removed = len(ids)
	for n := range names {
		out.Backups = append(out.Backups, n)
	}
	sort.Strings(out.Backups)
	if len(out.Backups) > maxListedBackups {
		out.Backups = out.Backups[:maxListedBackups]
	}
	g.pod.writeResult(out)
	g.pod.logger().Info("forget-backups done", "removed", out.Removed, "kept", out.Kept, "backups", out.Backups, "dry_run", o.dryRun)
	if g.json {
		return g.printJSON(out)
	}
	return nil
}

func nameSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}
