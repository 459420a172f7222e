package main

import (
	"context"
	"fmt"

	"github.com/blockmover/blockmover/bench"
	"github.com/blockmover/blockmover/internal/units"
	"github.com/spf13/cobra"
)

type generateOptions struct {
	size      string
	seed      uint64
	zero      float64
	file      float64
	duplicate float64
	corpus    []string
}

func newGenerateCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o generateOptions
	cmd := &cobra.Command{
		Use:   "generate --size SIZE FILE",
		Short: "Write a synthetic volume image (zeros, file data, duplicates, random data)",
		Long: `Write a deterministic synthetic volume image for demos and benchmarks: regions
of zeros (left as holes), real file data from a corpus directory, duplicates of
earlier data at unaligned offsets, and random data. The same flags always give
the same bytes. The file is created; an existing file is refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runGenerate(ctx, g, &o, args[0]) },
	}
	f := cmd.Flags()
	f.StringVar(&o.size, "size", "1GiB", "volume size")
	f.Uint64Var(&o.seed, "seed", 1, "random seed")
	f.Float64Var(&o.zero, "zero", 0.4, "fraction of zeros")
	f.Float64Var(&o.file, "file", 0.3, "fraction of real file data")
	f.Float64Var(&o.duplicate, "duplicate", 0.1, "fraction of duplicated data (the rest is random)")
	f.StringArrayVar(&o.corpus, "corpus", nil, "directory of real files for file data, repeatable (default: Go's tree, /usr/share, /usr/lib, /usr/bin)")
	return cmd
}

func runGenerate(ctx context.Context, g *globalOptions, o *generateOptions, path string) error {
	size, err := units.ParseSize(o.size)
	if err != nil {
		return usagef("--size: %v", err)
	}
	if size <= 0 {
		return usagef("--size must be positive")
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"zero", o.zero}, {"file", o.file}, {"duplicate", o.duplicate}} {
		if err := checkShare(f.name, f.v); err != nil {
			return err
		}
	}
	spec := bench.Spec{Size: size, Seed: o.seed, Zero: o.zero, File: o.file, Duplicate: o.duplicate}
	if _, err := spec.Layout(); err != nil {
		return usageError{err}
	}
	var corpus *bench.Corpus
	if o.file > 0 {
		dirs := o.corpus
		if len(dirs) == 0 {
			dirs = bench.DefaultCorpusDirs(bench.GoRoot())
		}
		if corpus, err = bench.NewCorpus(dirs...); err != nil {
			return err
		}
	}
	if _, err := bench.GenerateFile(ctx, path, spec, corpus, true); err != nil {
		return err
	}
	if !g.quiet {
		fmt.Fprintf(g.env.stdout, "wrote %s: %s (zeros %.0f%%, file data %.0f%%, duplicates %.0f%%, random %.0f%%)\n", path, units.Bytes(size),
			100*o.zero, 100*o.file, 100*o.duplicate, 100*(1-o.zero-o.file-o.duplicate))
	}
	return nil
}
