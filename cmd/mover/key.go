package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

type keyOptions struct {
	backend         backendOptions
	newPasswordFile string
}

func newKeyCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o keyOptions
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the key files that open the repository",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("key needs a subcommand: add, list or remove")
		},
	}
	o.backend.register(cmd)
	g.registerRepo(cmd)
	add := &cobra.Command{
		Use:   "add",
		Short: "Add a key file for a new password ($MOVER_NEW_PASSWORD or --new-password-file)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return runKeyAdd(ctx, g, &o) },
	}
	add.Flags().StringVar(&o.newPasswordFile, "new-password-file", "", "read the new password from this file")
	list := &cobra.Command{
		Use:   "list",
		Short: "List key files",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return runKeyList(ctx, g, &o) },
	}
	remove := &cobra.Command{
		Use:   "remove KEY_ID",
		Short: "Remove a key file (not the one in use)",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return runKeyRemove(ctx, g, &o, args[0]) },
	}
	for _, c := range []*cobra.Command{add, list, remove} {
		c.Flags().AddFlagSet(cmd.Flags())
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}

func runKeyAdd(ctx context.Context, g *globalOptions, o *keyOptions) error {
	var pw []byte
	var err error
	switch {
	case o.newPasswordFile != "":
		pw, err = readPasswordFile(o.newPasswordFile)
	case g.env.getenv("MOVER_NEW_PASSWORD") != "":
		pw = []byte(g.env.getenv("MOVER_NEW_PASSWORD"))
	default:
		if pw, err = g.prompt("new password: ", true); errors.Is(err, errNoPassword) {
			return usagef("no new password: set MOVER_NEW_PASSWORD or give --new-password-file")
		}
	}
	if err != nil {
		return err
	}
	r, err := g.openRepo(ctx, o.backend, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	id, err := r.AddKey(ctx, pw, repo.KDFParams{})
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(map[string]string{"id": id})
	}
	fmt.Fprintf(g.env.stdout, "added key %s\n", id[:8])
	return nil
}

func runKeyList(ctx context.Context, g *globalOptions, o *keyOptions) error {
	r, err := g.openRepo(ctx, o.backend, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	keys, err := r.Keys(ctx)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(keys)
	}
	tw := tabwriter.NewWriter(g.env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, " ID\tCREATED\tUSER\tHOST")
	for _, k := range keys {
		cur := " "
		if k.Current {
			cur = "*"
		}
		id := k.ID[:min(8, len(k.ID))]
		if k.Damaged != "" {
			fmt.Fprintf(tw, "%s%s\tDAMAGED: %s\t\t\n", cur, id, k.Damaged)
			continue
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", cur, id, units.Time(k.Created), k.Username, k.Hostname)
	}
	return tw.Flush()
}

func runKeyRemove(ctx context.Context, g *globalOptions, o *keyOptions, id string) error {
	r, err := g.openRepo(ctx, o.backend, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	removed, err := r.RemoveKey(ctx, id)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(map[string]string{"removed": removed})
	}
	fmt.Fprintf(g.env.stdout, "removed key %s\n", removed[:8])
	return nil
}
