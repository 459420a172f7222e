package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

type forgetOptions struct {
	backend   backendOptions
	volume    string
	policy    repo.Policy
	dryRun    bool
	staleLock time.Duration
}

func newForgetCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o forgetOptions
	cmd := &cobra.Command{
		Use:   "forget [SNAPSHOT…] | --keep-last N [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--name VOLUME]",
		Short: "Remove snapshots by ID or by a retention policy (data goes at the next gc)",
		Long: `Remove snapshots, either the ones named, or per volume all that a retention
policy does not keep: the newest --keep-last, and the newest snapshot of each
of the --keep-daily, --keep-weekly and --keep-monthly most recent days, ISO
weeks and months that have snapshots. Chunks are freed by mover gc.`,
		RunE: func(cmd *cobra.Command, args []string) error { return runForget(ctx, g, &o, args) },
	}
	f := cmd.Flags()
	o.backend.register(cmd)
	g.registerRepo(cmd)
	volumeFlag(cmd, &o.volume, "apply the policy to this volume only (alias --name)")
	f.IntVar(&o.policy.Last, "keep-last", 0, "keep the N newest snapshots")
	f.IntVar(&o.policy.Daily, "keep-daily", 0, "keep the newest snapshot of each of the last N days with snapshots")
	f.IntVar(&o.policy.Weekly, "keep-weekly", 0, "keep the newest snapshot of each of the last N weeks with snapshots")
	f.IntVar(&o.policy.Monthly, "keep-monthly", 0, "keep the newest snapshot of each of the last N months with snapshots")
	f.BoolVar(&o.dryRun, "dry-run", false, "only print what would be removed")
	registerStaleLock(f, &o.staleLock)
	g.pod.attach(ctx, g, cmd)
	return cmd
}

type forgetJSON struct {
	Removed []string `json:"removed"`
	Kept    []string `json:"kept"`
	DryRun  bool     `json:"dry_run,omitempty"`
}

func (o *forgetOptions) validate(args []string) error {
	p := o.policy
	switch {
	case p.Last < 0 || p.Daily < 0 || p.Weekly < 0 || p.Monthly < 0:
		return usagef("--keep-* values must not be negative")
	case o.staleLock <= 0:
		return usagef("--stale-lock %v: must be positive", o.staleLock)
	case len(args) > 0 && (!p.Empty() || o.volume != ""):
		return usagef("give snapshot IDs or a policy, not both")
	case len(args) == 0 && p.Empty():
		return usagef("nothing to do: give snapshot IDs or at least one --keep-* rule")
	}
	return nil
}

// removal is a snapshot to forget, and what it is for people.
type removal struct {
	id   repo.ID
	what string
}

func describeSnapshot(s *repo.Snapshot) string {
	return units.Time(s.Time) + " " + s.Volume
}

func runForget(ctx context.Context, g *globalOptions, o *forgetOptions, args []string) error {
	if err := o.validate(args); err != nil {
		return err
	}
	r, err := g.openRepo(ctx, o.backend, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	out := forgetJSON{Removed: []string{}, Kept: []string{}, DryRun: o.dryRun}
	var remove []removal
	if len(args) > 0 {
		remove, err = g.forgetByRef(ctx, r, args)
	} else {
		remove, err = g.forgetByPolicy(ctx, r, o, &out)
	}
	if err != nil {
		return err
	}
	if !o.dryRun {
		ids := make([]repo.ID, len(remove))
		for i, s := range remove {
			ids[i] = s.id
		}
		if err := r.Forget(ctx, ids, o.staleLock); err != nil {
			return err
		}
	}
	verb := "remove"
	if o.dryRun {
		verb = "would remove"
	}
	for _, s := range remove {
		out.Removed = append(out.Removed, s.id.String())
		if !g.json && !g.quiet {
			fmt.Fprintf(g.env.stdout, "%s %s %s\n", verb, s.id.Short(), s.what)
		}
	}
	g.pod.forgot(out)
	if g.json {
		return g.printJSON(out)
	}
	return nil
}

// forgetByRef resolves the snapshots named on the command line. An ID or
// prefix is resolved without reading the snapshot, so a damaged snapshot
// file can be forgotten too.
func (g *globalOptions) forgetByRef(ctx context.Context, r *repo.Repository, args []string) ([]removal, error) {
	var remove []removal
	for _, a := range args {
		if a == "latest" || strings.HasPrefix(a, "latest:") {
			s, err := g.findSnapshot(ctx, r, a)
			if err != nil {
				return nil, err
			}
			remove = append(remove, removal{s.ID, describeSnapshot(s)})
			continue
		}
		id, err := r.MatchSnapshotID(ctx, a)
		if err != nil {
			return nil, err
		}
		what := "(damaged snapshot file)"
		if s, err := r.LoadSnapshot(ctx, id); err == nil {
			what = describeSnapshot(s)
		}
		remove = append(remove, removal{id, what})
	}
	return remove, nil
}

// forgetByPolicy applies the retention policy per volume, printing and
// recording what it keeps.
func (g *globalOptions) forgetByPolicy(ctx context.Context, r *repo.Repository, o *forgetOptions, out *forgetJSON) ([]removal, error) {
	list, err := r.ReadSummaries(ctx) // the policy needs no page lists
	if err != nil {
		return nil, err
	}
	// The snapshots it keeps are read (verified), the others not.
	decisions, damaged, err := r.ApplyPolicy(ctx, o.policy, list, o.volume)
	if err != nil {
		return nil, err
	}
	for _, u := range damaged {
		warnf(g.env.stderr, "the policy skips damaged snapshot file %s (%v): forget it by ID or repair it", u.Key(), u.Err)
	}
	var remove []removal
	for _, d := range decisions {
		if !d.Keep {
			remove = append(remove, removal{d.Snapshot.ID, describeSnapshot(d.Snapshot)})
			continue
		}
		out.Kept = append(out.Kept, d.Snapshot.ID.String())
		if !g.json && !g.quiet {
			fmt.Fprintf(g.env.stdout, "keep   %s %s (%s)\n", d.Snapshot.ID.Short(), describeSnapshot(d.Snapshot), strings.Join(d.Reasons, ", "))
		}
	}
	return remove, nil
}
