package main

import (
	"context"
	"fmt"
	iofs "io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/location"
	"github.com/spf13/cobra"
)

type initOptions struct {
	backend   backendOptions
	chunker   string
	minSize   string
	avgSize   string
	maxSize   string
	fixedSize string
	segment   string
	zeroBlock string
	packSize  string
	pol       string
	lockDays  int
	lockMode  string
}

func newInitCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a repository",
		Long: `Create a repository. Everything that decides chunk boundaries is fixed here,
for the life of the repository: the splitter (cdc or fixed), its sizes, the
segment size and the zero-block size. A random, secret polynomial is drawn for
content-defined chunking.

The location must be empty: a directory (created if missing, and made private,
mode 0700, when it holds nothing) or an S3 prefix without objects. If a
repository is already there, init changes nothing and exits with code 3, so a
caller racing another to initialise can open it instead. A repository whose
config was lost is refused too: a new config would mean a new master key and
new chunking, and init never overwrites a repository.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runInit(ctx, g, &o) },
	}
	f := cmd.Flags()
	o.backend.register(cmd)
	g.registerRepo(cmd)
	f.StringVar(&o.chunker, "chunker", "cdc", "splitter: cdc (content-defined) or fixed")
	f.StringVar(&o.minSize, "min-size", "512KiB", "smallest cdc chunk")
	f.StringVar(&o.avgSize, "avg-size", "1MiB", "average cdc chunk (a power of two)")
	f.StringVar(&o.maxSize, "max-size", "4MiB", "largest cdc chunk")
	f.StringVar(&o.fixedSize, "fixed-size", "1MiB", "chunk size of the fixed splitter")
	f.StringVar(&o.segment, "segment-size", "64MiB", "forced cut distance: segments are cut in parallel")
	f.StringVar(&o.zeroBlock, "zero-block", "64KiB", "zero-run granularity: all-zero aligned blocks become holes")
	f.StringVar(&o.packSize, "pack-size", "16MiB", "target size of pack files")
	f.StringVar(&o.pol, "polynomial", "", "cdc Rabin polynomial in hex instead of a random one (for reproducible tests and benchmarks; it makes chunk boundaries predictable)")
	f.MarkHidden("polynomial")
	f.IntVar(&o.lockDays, "object-lock-days", 0, "S3 only: write every object with an Object Lock retention of N days (the bucket needs Object Lock; see README)")
	f.StringVar(&o.lockMode, "object-lock-mode", "compliance", "Object Lock mode: compliance or governance")
	g.pod.attach(ctx, g, cmd)
	return cmd
}

func (o *initOptions) params() (chunk.Params, int, error) {
	var p chunk.Params
	sizes := map[string]*string{"min-size": &o.minSize, "avg-size": &o.avgSize, "max-size": &o.maxSize, "fixed-size": &o.fixedSize, "segment-size": &o.segment, "zero-block": &o.zeroBlock, "pack-size": &o.packSize}
	v := map[string]int64{}
	for name, s := range sizes {
		n, err := units.ParseSize(*s)
		if err != nil {
			return p, 0, usagef("--%s: %v", name, err)
		}
		v[name] = n
	}
	switch o.chunker {
	case "cdc":
		pol, err := chunk.NewPolynomial()
		if err != nil {
			return p, 0, err
		}
		if o.pol != "" {
			if pol, err = strconv.ParseUint(strings.TrimPrefix(o.pol, "0x"), 16, 64); err != nil {
				return p, 0, usagef("--polynomial %q: want hex digits", o.pol)
			}
		}
		p = chunk.DefaultParams(pol)
		p.MinSize, p.AvgSize, p.MaxSize = int(v["min-size"]), int(v["avg-size"]), int(v["max-size"])
	case "fixed":
		p = chunk.Params{Splitter: chunk.Fixed, FixedSize: int(v["fixed-size"])}
	default:
		return p, 0, usagef("--chunker %q: want cdc or fixed", o.chunker)
	}
	p.SegmentSize, p.ZeroBlock = v["segment-size"], int(v["zero-block"])
	if ps := v["pack-size"]; ps < repo.MinPackSize || ps > repo.MaxPackSize {
		return p, 0, usagef("--pack-size %s: the pack size must be from %s to %s", o.packSize, units.Bytes(repo.MinPackSize), units.Bytes(repo.MaxPackSize))
	}
	if err := p.Validate(); err != nil {
		return p, 0, usageError{err}
	}
	return p, int(v["pack-size"]), nil
}

func runInit(ctx context.Context, g *globalOptions, o *initOptions) error {
	loc, err := g.location()
	if err != nil {
		return err
	}
	p, packSize, err := o.params()
	if err != nil {
		return err
	}
	var lock *repo.ObjectLock
	if err := checkCount("object-lock-days", o.lockDays, maxLockDays); err != nil {
		return err
	}
	if o.lockDays > 0 {
		if o.lockMode != "compliance" && o.lockMode != "governance" {
			return usagef("--object-lock-mode %q: want compliance or governance", o.lockMode)
		}
		lock = &repo.ObjectLock{Days: o.lockDays, Mode: o.lockMode}
	}
	pw, err := g.secret("new repository password: ", true)
	if err != nil {
		return err
	}
	be, err := g.backendFor(ctx, loc, o.backend, true, lock)
	if err != nil {
		return err
	}
	defer be.Close()
	if !location.IsS3(loc) {
		// repo.Init lists the objects; a directory may also hold what
		// is no object (symbolic links, sockets, devices).
		if err := notObjects(loc); err != nil {
			return fmt.Errorf("%s: %w", loc, err)
		}
	}
	r, err := repo.Init(ctx, be, pw, repo.InitOptions{Chunking: &p, PackSize: packSize, ObjectLock: lock})
	if err != nil {
		return fmt.Errorf("%s: %w", loc, err)
	}
	defer r.Close()
	out := map[string]any{"repository": loc, "id": r.RepoID(), "config": r.Config()}
	g.pod.initialised(out)
	if g.json {
		return g.printJSON(out)
	}
	fmt.Fprintf(g.env.stdout, "created repository %s at %s\n", r.RepoID().Short(), loc)
	return nil
}

// notObjects returns an error wrapping repo.ErrNotEmpty, naming the entry,
// if the tree under dir holds anything that is neither a directory nor a
// regular file (the backend lists regular files as objects, and repo.Init
// refuses those itself). Temporary files of the backend are ignored.
func notObjects(dir string) error {
	var found string
	err := filepath.WalkDir(dir, func(path string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || d.Type().IsRegular() || strings.HasPrefix(d.Name(), backend.TempPrefix) {
			return nil
		}
		found, _ = filepath.Rel(dir, path)
		return filepath.SkipAll
	})
	if err != nil {
		return fmt.Errorf("reading the directory: %w", err)
	}
	if found != "" {
		return fmt.Errorf("the location is not empty (holds %s, which is not a regular file); %w", found, repo.ErrNotEmpty)
	}
	return nil
}
