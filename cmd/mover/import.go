package main

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend/location"
	"github.com/spf13/cobra"
)

type importOptions struct {
	backend      backendOptions
	snapshot     string
	target       string
	targetZeroed bool
	create       bool
	assumeBase   string
	verifyTarget bool
}

func newImportCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o importOptions
	cmd := &cobra.Command{
		Use:   "import --snapshot ID|latest[:VOLUME] --target DEVICE",
		Short: "Write a snapshot onto a block device or image file",
		Long: `Write a snapshot onto a block device or image file. Every chunk is verified
against its ID before it is written. Regions that are zero in the snapshot are
made zero on the target (holes punched in files, BLKZEROOUT on devices) unless
--target-zeroed promises they already are. A block device is opened
exclusively and must be at least as large as the snapshot; a file is created
if missing and sized to the snapshot.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runImport(ctx, g, &o) },
	}
	f := cmd.Flags()
	o.backend.register(cmd)
	g.registerRepo(cmd)
	f.StringVar(&o.snapshot, "snapshot", "", "snapshot ID, unique ID prefix, latest or latest:VOLUME (required)")
	f.StringVar(&o.target, "target", "", "block device or file to write (required)")
	f.BoolVar(&o.targetZeroed, "target-zeroed", false, "the target already reads as zeros: skip zeroing holes")
	f.BoolVar(&o.create, "create", true, "create the target file if it does not exist")
	f.StringVar(&o.assumeBase, "assume-base", "", "the target already holds this snapshot: write only what differs")
	f.BoolVar(&o.verifyTarget, "verify-target", false, "read the target and write only what differs from the snapshot")
	cmd.MarkFlagsMutuallyExclusive("assume-base", "verify-target")
	cmd.MarkFlagRequired("snapshot")
	cmd.MarkFlagRequired("target")
	g.pod.attach(ctx, g, cmd)
	return cmd
}

// importJSON is the result object of `mover import --json`.
// importJSON is what import --json prints (mover.ImportReport, the
// contract with control planes).
type importJSON = mover.ImportReport

func runImport(ctx context.Context, g *globalOptions, o *importOptions) error {
	if loc, err := g.location(); err == nil && !location.IsS3(loc) {
		if err := checkTargetOutside(loc, o.target); err != nil {
			return err
		}
	}
	r, err := g.openRepo(ctx, o.backend, repo.Options{IndexCache: g.indexCacheDir()})
	if err != nil {
		return err
	}
	defer closeRepo(r)
	snap, err := g.findSnapshot(ctx, r, o.snapshot)
	if err != nil {
		return err
	}
	var base *repo.Snapshot
	if o.assumeBase != "" {
		if base, err = g.findSnapshot(ctx, r, o.assumeBase); err != nil {
			return fmt.Errorf("--assume-base: %w", err)
		}
	}
	dst, err := mover.OpenTarget(o.target, snap.Size, mover.TargetOptions{Create: o.create})
	if err != nil {
		return unsuitable(err)
	}
	defer dst.Close()
	g.pod.volumeKnown(snap.Volume, snap.Size)
	loc, _ := g.location() // openRepo succeeded with it
	opts := mover.ImportOptions{
		TargetZeroed: o.targetZeroed, Downloads: o.backend.downloads(loc),
		AssumeBase: base, VerifyTarget: o.verifyTarget,
		Progress: g.progressFunc("import"),
	}
	restore := spareProc()
	res, err := mover.Import(ctx, r, snap, dst, opts)
	restore()
	if err != nil {
		return err
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("closing target: %w", err)
	}
	out := res.Report(snap.ID.String(), snap.Volume)
	g.pod.imported(out, res)
	if g.json {
		return g.printJSON(out)
	}
	fmt.Fprintf(g.env.stdout, "imported snapshot %s of %s onto %s: %s in %.1fs (%s); written %s, zeroed %s\n",
		snap.ID.Short(), snap.Volume, o.target, units.Bytes(res.Size), out.Seconds, units.Rate(float64(res.Size)/res.Duration.Seconds()),
		units.Bytes(res.WrittenBytes), units.Bytes(res.ZeroedBytes))
	return nil
}

// checkTargetOutside refuses an import target that is the directory
// repository repoDir or lies inside it, after resolving symbolic links:
// the import would overwrite the repository's own files.
func checkTargetOutside(repoDir, target string) error {
	rd, err := filepath.EvalSymlinks(repoDir)
	if err != nil {
		return nil // no repository there: opening it says so
	}
	if rd, err = filepath.Abs(rd); err != nil {
		return nil
	}
	td, err := resolveTarget(target)
	if err != nil {
		return nil // it cannot be opened either: opening it says why
	}
	if td == rd || strings.HasPrefix(td, rd+string(filepath.Separator)) {
		return unsuitable(fmt.Errorf("--target %s is inside the repository %s: the import would overwrite the repository's files; choose a target outside it", target, repoDir))
	}
	return nil
}

// resolveTarget returns the absolute path, symbolic links resolved, that
// opening (or creating) target reaches. Only its last element may be
// missing, as when the import creates the file. Paths are not cleaned
// before they are resolved: "link/.." is the parent of link's target.
func resolveTarget(target string) (string, error) {
	p := target
	if !filepath.IsAbs(p) {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		p = wd + string(filepath.Separator) + p
	}
	real, err := filepath.EvalSymlinks(p)
	if err == nil {
		return filepath.Abs(real)
	}
	if !errors.Is(err, iofs.ErrNotExist) {
		return "", err
	}
	i := strings.LastIndexByte(p, filepath.Separator)
	parent, base := p[:i], p[i+1:]
	if parent == "" {
		parent = string(filepath.Separator)
	}
	real, err = filepath.EvalSymlinks(parent)
	if err != nil {
		return "", err
	}
	return filepath.Abs(filepath.Join(real, base))
}
