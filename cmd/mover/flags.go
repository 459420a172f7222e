package main

import (
	"math"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Upper bounds of the flags that size memory or goroutines. They are far
// above what helps (see BENCHMARKS.md) and far below what exhausts a
// machine: --connections 1000000000 once spun an export for ten minutes
// and grew an import to 17.7 GB of memory.
const (
	// maxConnections bounds --connections: parallel requests, upload and
	// download workers, each holding up to a pack of memory.
	maxConnections = 256
	// maxWorkers bounds --workers: CPU workers, each holding chunk
	// buffers and a pack in the making.
	maxWorkers = 1024
	// maxLockDays bounds --object-lock-days (100 years).
	maxLockDays = 36500
)

// checkCount checks a count flag where 0 (or leaving it unset) means the
// default: v must be 0 to max. The error is a usage error naming the flag
// and the range.
func checkCount(name string, v, max int) error {
	if v < 0 || v > max {
		return usagef("--%s %d: want 1 to %d (0 or unset: the default)", name, v, max)
	}
	return nil
}

// checkFraction checks a flag that must be a fraction above 0 and at most
// 1; NaN and the infinities are refused.
func checkFraction(name string, v float64) error {
	if math.IsNaN(v) || v <= 0 || v > 1 {
		return usagef("--%s %g: want a fraction above 0 and at most 1", name, v)
	}
	return nil
}

// checkShare checks a flag that must be a fraction from 0 to 1, both
// included; NaN and the infinities are refused.
func checkShare(name string, v float64) error {
	if math.IsNaN(v) || v < 0 || v > 1 {
		return usagef("--%s %g: want a fraction from 0 to 1", name, v)
	}
	return nil
}

// volumeFlag adds --volume (the name a snapshot is filed under, "volume"
// in JSON, tables and the library) to cmd, with --name, its name before,
// as an alias.
func volumeFlag(cmd *cobra.Command, v *string, usage string) {
	f := cmd.Flags()
	f.StringVar(v, "volume", "", usage)
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "name" {
			name = "volume"
		}
		return pflag.NormalizedName(name)
	})
}
