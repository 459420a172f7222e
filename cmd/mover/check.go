package main

import (
	"context"
	"fmt"

	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

type checkOptions struct {
	backend  backendOptions
	readData bool
}

func newCheckCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o checkOptions
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Verify the repository's structure, and with --read-data every blob",
		Long: `Verify the repository: key files parse, every index file authenticates, every
index entry points into an existing pack, every snapshot and manifest page
loads and every chunk they name is indexed. With --read-data every pack is
downloaded and every blob decrypted and verified against its ID. Damaged
objects are named; the exit code is non-zero if any error is found.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runCheck(ctx, g, &o) },
	}
	o.backend.register(cmd)
	g.registerRepo(cmd)
	cmd.Flags().BoolVar(&o.readData, "read-data", false, "download and verify every blob")
	g.pod.attach(ctx, g, cmd)
	return cmd
}

func runCheck(ctx context.Context, g *globalOptions, o *checkOptions) error {
	// The index is read by the check itself, so a damaged index file is
	// reported rather than stopping the open.
	r, err := g.openRepo(ctx, o.backend, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	res, err := r.Check(ctx, repo.CheckOptions{ReadData: o.readData, Workers: o.backend.connections})
	if err != nil {
		return err
	}
	g.pod.checked(res)
	if g.json {
		if err := g.printJSON(res); err != nil {
			return err
		}
	} else {
		for _, p := range res.Problems {
			kind := "error"
			if p.Warning {
				kind = "warning"
			}
			fmt.Fprintf(g.env.stdout, "%s: %s\n", kind, p)
		}
		fmt.Fprintf(g.env.stdout, "checked %s, %s, %s", units.Plural(res.Packs, "pack"), units.Plural(res.Blobs, "blob"), units.Plural(res.Snapshots, "snapshot"))
		if o.readData {
			fmt.Fprintf(g.env.stdout, ", read %s", units.Bytes(res.ReadBytes))
		}
		fmt.Fprintln(g.env.stdout)
	}
	if errs := res.Errors(); len(errs) > 0 {
		return fmt.Errorf("check found %s, the first: %s", units.Plural(len(errs), "error"), errs[0])
	}
	return nil
}
