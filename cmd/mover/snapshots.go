package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

type snapshotsOptions struct {
	backend backendOptions
	volume  string
}

func newSnapshotsCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o snapshotsOptions
	cmd := &cobra.Command{
		Use:   "snapshots",
		Short: "List snapshots, oldest first",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return runSnapshots(ctx, g, &o) },
	}
	o.backend.register(cmd)
	g.registerRepo(cmd)
	volumeFlag(cmd, &o.volume, "only snapshots of this volume (alias --name)")
	return cmd
}

// findSnapshot resolves ref like repo.FindSnapshot, and warns on stderr
// about every damaged snapshot file that "latest" passed over.
func (g *globalOptions) findSnapshot(ctx context.Context, r *repo.Repository, ref string) (*repo.Snapshot, error) {
	s, skipped, err := r.ResolveSnapshot(ctx, ref)
	for _, u := range skipped {
		warnf(g.env.stderr, "%s: skipped damaged snapshot file %s (%v); it resolves among the readable snapshots", ref, u.Key(), u.Err)
	}
	return s, err
}

// damagedSnapshotJSON is an entry of `mover snapshots --json` for a
// damaged snapshot file: its ID, and why it cannot be read (its volume and
// time are unknown).
type damagedSnapshotJSON struct {
	ID      string `json:"id"`
	Damaged string `json:"damaged"`
}

// snapshotJSON is one entry of `mover snapshots --json`.
type snapshotJSON struct {
	ID       string             `json:"id"`
	Volume   string             `json:"volume"`
	Time     string             `json:"time"`
	Size     int64              `json:"size"`
	Source   string             `json:"source,omitempty"`
	Hostname string             `json:"hostname,omitempty"`
	Tags     map[string]string  `json:"tags,omitempty"`
	Parent   string             `json:"parent,omitempty"`
	Stats    repo.SnapshotStats `json:"stats"`
	Repaired *repo.Repaired     `json:"repaired,omitempty"`

	at time.Time // Time, for the table
}

func runSnapshots(ctx context.Context, g *globalOptions, o *snapshotsOptions) error {
	r, err := g.openRepo(ctx, o.backend, repo.Options{NoIndex: true}) // listing needs no index
	if err != nil {
		return err
	}
	defer closeRepo(r)
	// Summaries, not snapshot files: no page lists (FORMAT.md, "Snapshot
	// summaries").
	list, err := r.ReadSummaries(ctx)
	if err != nil {
		return err
	}
	snaps, damaged := list.Snapshots, list.Damaged
	for _, p := range list.BadSummaries {
		warnf(g.env.stderr, "%v; listed from its snapshot file instead (mover repair snapshots rewrites the summary)", p)
	}
	for _, u := range damaged {
		warnf(g.env.stderr, "snapshot file %s is damaged (%v); mover check and mover repair snapshots tell more, mover forget %s removes it", u.Key(), u.Err, u.ID.Short())
	}
	out := []snapshotJSON{}
	for _, s := range snaps {
		if o.volume != "" && s.Volume != o.volume {
			continue
		}
		j := snapshotJSON{ID: s.ID.String(), Volume: s.Volume, Time: s.Time.Format(time.RFC3339), Size: s.Size,
			Source: s.Source, Hostname: s.Hostname, Tags: s.Tags, Stats: s.Stats, Repaired: s.Repaired, at: s.Time}
		if s.Parent != nil {
			j.Parent = s.Parent.String()
		}
		out = append(out, j)
	}
	if g.json {
		// Damaged files are listed too, after the others, with the
		// reason in "damaged": a reader cannot tell their volume, so
		// they show under --name as well.
		all := make([]any, 0, len(out)+len(damaged))
		for _, s := range out {
			all = append(all, s)
		}
		for _, u := range damaged {
			all = append(all, damagedSnapshotJSON{ID: u.ID.String(), Damaged: u.Err.Error()})
		}
		return g.printJSON(all)
	}
	tw := tabwriter.NewWriter(g.env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tVOLUME\tSIZE\tSTORED\tTAGS")
	for _, s := range out {
		var tags []string
		for k, v := range s.Tags {
			tags = append(tags, k+"="+v)
		}
		sort.Strings(tags)
		if s.Repaired != nil {
			var lost int64
			for _, rg := range s.Repaired.Damaged {
				lost += rg.Length
			}
			tags = append(tags, fmt.Sprintf("REPAIRED(%s lost, from %s)", units.Bytes(lost), s.Repaired.From.Short()))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID[:8], units.Time(s.at), s.Volume, units.Bytes(s.Size), units.Bytes(s.Stats.StoredBytes), strings.Join(tags, ","))
	}
	for _, u := range damaged {
		fmt.Fprintf(tw, "%s\tDAMAGED: %v\t\t\t\t\n", u.ID.Short(), u.Err)
	}
	return tw.Flush()
}
