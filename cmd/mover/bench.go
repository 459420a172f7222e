package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/blockmover/blockmover/bench"
	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/location"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type benchOptions struct {
	backend backendOptions

	preset, size string
	seed         uint64
	// Overrides of the preset's volume and change, when given.
	zero, compressible, ratio, duplicate, file float64
	corpus                                     []string
	changeRate                                 float64
	changePattern, writeSize, changeContent    string
	clusters                                   int

	runs    int
	ops     []string
	sweeps  []string
	peers   []string
	workers int
	chunker string
	zstd    string
	pack    string

	workdir     string
	device      string
	destroyData bool
	onDisk      bool
	sparse      bool
	cold        bool
	noVerify    bool
	noRaw       bool
	rawSize     string
	inProcess   bool

	html, markdown string
	baseline       string
	child          bool
}

func newBenchCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench [--preset NAME] [--size SIZE] [--peers restic] [--sweep KEY=V1,V2] [--runs N] [--html FILE]",
		Short: "Measure export and import on a synthetic volume, per stage, against peers",
		Long: `Measure mover on a deterministic synthetic volume: a full export, an
incremental export with the volume's change list, a full import and an
incremental import, each in a fresh repository, --runs times (medians and
ranges). Every run is a child process, so CPU seconds and peak RSS are its
own. Reports the time of each pipeline stage and names the bottleneck,
measures the storage's raw sequential speed (O_DIRECT) alongside, sweeps
settings (--sweep workers=1,2,4,8, chunker=cdc-1Mi,cdc-4Mi,fixed-1Mi,
zstd=fastest,default,better, pack=16Mi,64Mi) and runs peers on the same data,
interleaved (--peers restic,kopia).

The volume is computed on the fly and fed to the export without touching a
disk, unless peers run or --on-disk is given (then it is an image file in
--workdir, read warm from the page cache, or cold with --cold), or
--device /dev/X --destroy-data writes it to a block device that the runs
then read and restore onto. Repositories go under --repo (a directory or
s3://BUCKET/PREFIX; default: --workdir) and are removed afterwards;
$MOVER_REPOSITORY is ignored, so that a benchmark never writes beside a
real repository by accident.

Presets: empty-disk, vm-image, database, random, mixed; --zero,
--compressible, --ratio, --duplicate, --change-rate and friends override
their figures.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runBench(ctx, g, &o, cmd) },
	}
	f := cmd.Flags()
	f.StringVar(&o.preset, "preset", "vm-image", "scenario: "+strings.Join(bench.Presets(), ", "))
	f.StringVar(&o.size, "size", "4GiB", "volume size (default with --device: the device's size)")
	f.Uint64Var(&o.seed, "seed", 1, "random seed of the volume and its change")
	f.Float64Var(&o.zero, "zero", 0, "fraction of zeros (overrides the preset)")
	f.Float64Var(&o.compressible, "compressible", 0, "fraction of compressible data (overrides the preset)")
	f.Float64Var(&o.ratio, "ratio", 0, "zstd ratio of the compressible data, 1 to 4.5 (overrides the preset)")
	f.Float64Var(&o.duplicate, "duplicate", 0, "fraction of duplicated data (overrides the preset)")
	f.Float64Var(&o.file, "file", 0, "fraction of real file data from --corpus (machine-dependent; overrides the preset)")
	f.StringArrayVar(&o.corpus, "corpus", nil, "directory of real files for --file data, repeatable (default: Go's tree, /usr/share, /usr/lib, /usr/bin)")
	f.Float64Var(&o.changeRate, "change-rate", 0, "fraction of the volume written between the two snapshots (overrides the preset)")
	f.StringVar(&o.changePattern, "change-pattern", "", "scattered, clustered or sequential (overrides the preset)")
	f.StringVar(&o.writeSize, "write-size", "", "size of one write of the change (overrides the preset)")
	f.IntVar(&o.clusters, "clusters", 0, "runs of a clustered change (overrides the preset)")
	f.StringVar(&o.changeContent, "change-content", "", "random or compressible new data (overrides the preset)")
	f.IntVar(&o.runs, "runs", 3, "measured runs of each operation")
	f.StringSliceVar(&o.ops, "ops", nil, "operations: full-export, incremental-export, full-import, incremental-import (default all)")
	f.StringArrayVar(&o.sweeps, "sweep", nil, "sweep a setting: workers=1,2,4,8, chunker=cdc-1Mi,cdc-4Mi,fixed-1Mi, zstd=fastest,default,better or pack=16Mi,64Mi (repeatable)")
	f.StringSliceVar(&o.peers, "peers", nil, "other tools to run on the same scenario: restic, kopia")
	f.IntVar(&o.workers, "workers", 0, "export workers (default: one per CPU)")
	f.StringVar(&o.chunker, "chunker", "", "chunker of the repositories: cdc-SIZE or fixed-SIZE (default cdc-1Mi)")
	f.StringVar(&o.zstd, "zstd", "", "zstd level: fastest (default), default, better")
	f.StringVar(&o.pack, "pack", "", "pack size (default 16Mi)")
	f.StringVar(&o.workdir, "workdir", "", "directory for the image, restore targets and peers' caches (default: a new temporary directory)")
	f.StringVar(&o.device, "device", "", "block device to write the scenario to and run on (needs --destroy-data)")
	f.BoolVar(&o.destroyData, "destroy-data", false, "allow --device to be overwritten")
	f.BoolVar(&o.onDisk, "on-disk", false, "write the volume to an image file in --workdir and read it from there")
	f.BoolVar(&o.sparse, "sparse", false, "the volume computed on the fly reports its zero regions as holes (never read)")
	f.BoolVar(&o.cold, "cold", false, "drop the image file from the page cache before each export (default: warm)")
	f.BoolVar(&o.noVerify, "no-verify", false, "do not compare restored volumes with the scenario")
	f.BoolVar(&o.noRaw, "no-raw", false, "do not measure the storage's raw sequential speed")
	f.StringVar(&o.rawSize, "raw-size", "", "bytes per raw speed test (default 512MiB in a file, 1GiB on a device)")
	f.BoolVar(&o.inProcess, "in-process", false, "run every measurement in this process (peak RSS is then the process's peak so far)")
	f.StringVar(&o.html, "html", "", "write a self-contained HTML report with charts to this file")
	f.StringVar(&o.markdown, "markdown", "", "refresh the generated section of this Markdown file (between <!-- mover bench: begin/end --> markers)")
	f.StringVar(&o.baseline, "baseline", "", "an earlier run's report (written with --json) to show each figure beside, with the change in percent")
	f.BoolVar(&o.child, "child", false, "run one job read from stdin (used by mover bench itself)")
	f.MarkHidden("child")
	o.backend.register(cmd)
	g.registerRepo(cmd)
	return cmd
}

// backendFunc opens benchmark repository locations with the command's
// storage flags.
func (g *globalOptions) benchBackend(bo backendOptions) bench.BackendFunc {
	return func(ctx context.Context, loc string, create bool) (backend.Backend, error) {
		return g.backendFor(ctx, loc, bo, create, nil)
	}
}

func runBench(ctx context.Context, g *globalOptions, o *benchOptions, cmd *cobra.Command) error {
	if o.child {
		return bench.ServeChild(ctx, g.env.stdin, g.env.stdout, g.benchBackend(o.backend))
	}
	cfg, err := o.config(g, cmd)
	if err != nil {
		return err
	}
	baseline, err := readBaseline(o.baseline)
	if err != nil {
		return err
	}
	if o.workdir == "" {
		dir, err := os.MkdirTemp("", "mover-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.Work = dir
	}
	if !g.quiet {
		cfg.Progress = func(line string) {
			if g.json {
				b, _ := json.Marshal(map[string]string{"progress": line})
				fmt.Fprintf(g.env.stderr, "%s\n", b)
				return
			}
			fmt.Fprintf(g.env.stderr, "mover bench: %s\n", line)
		}
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.SetBaseline(baseline)
	if o.html != "" {
		if err := writeFileWith(o.html, rep.HTML); err != nil {
			return fmt.Errorf("--html: %w", err)
		}
	}
	if o.markdown != "" {
		if err := bench.UpdateMarkdown(o.markdown, rep); err != nil {
			return fmt.Errorf("--markdown: %w", err)
		}
	}
	if g.json {
		return g.printJSON(rep)
	}
	return rep.Text(g.env.stdout)
}

// readBaseline reads the report of --baseline (nil without one).
func readBaseline(path string) (*bench.Report, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("--baseline: %w", err)
	}
	defer f.Close()
	rep, err := bench.ReadReport(f)
	if err != nil {
		return nil, usagef("--baseline %s: %w", path, err)
	}
	return rep, nil
}

// config turns the command line into a benchmark.
func (o *benchOptions) config(g *globalOptions, cmd *cobra.Command) (bench.Config, error) {
	if o.device != "" && !o.destroyData {
		return bench.Config{}, usagef("--device %s overwrites the device: add --destroy-data to confirm", o.device)
	}
	flags := cmd.Flags()
	sc, err := o.scenario(flags)
	if err != nil {
		return bench.Config{}, err
	}
	cfg := bench.Config{
		Scenario: sc, Corpus: o.corpus, Runs: o.runs, Peers: o.peers, Repo: g.repo,
		Backend: g.benchBackend(o.backend), Work: o.workdir, Device: o.device, DestroyData: o.destroyData,
		OnDisk: o.onDisk, Sparse: o.sparse, Cold: o.cold, NoVerify: o.noVerify, Command: commandLine(cmd),
		S3: bench.S3Peer{Endpoint: o.backend.s3Endpoint, PathStyle: o.backend.s3PathStyle, CABundle: o.backend.s3CABundle},
	}
	if v := buildVersion(); v.Version != "unknown" {
		cfg.MoverVersion = v.label()
	}
	if cfg.S3.Endpoint == "" {
		cfg.S3.Endpoint = g.env.getenv("AWS_ENDPOINT_URL")
	}
	if o.runs < 1 {
		return cfg, usagef("--runs %d: want at least 1", o.runs)
	}
	if cfg.Settings, err = o.settings(flags); err != nil {
		return cfg, err
	}
	if o.connections() > 0 || location.IsS3(g.repo) {
		cfg.Settings.Uploads = o.backend.uploads(g.repo)
	}
	if err := o.lists(&cfg); err != nil {
		return cfg, err
	}
	if !o.inProcess {
		exe, err := os.Executable()
		if err != nil {
			return cfg, fmt.Errorf("finding the mover binary for child runs: %w (use --in-process)", err)
		}
		cfg.Exec = append([]string{exe, "bench", "--child"}, o.backend.args()...)
	}
	return cfg, nil
}

// scenario is the preset at the volume size, with the figures the command
// line overrides.
func (o *benchOptions) scenario(flags *pflag.FlagSet) (bench.Scenario, error) {
	size, err := o.volumeSize(flags)
	if err != nil {
		return bench.Scenario{}, err
	}
	sc, err := bench.Preset(o.preset, size, o.seed)
	if err != nil {
		return sc, usageError{err}
	}
	if err := o.checkFigures(); err != nil {
		return sc, err
	}
	v, c := &sc.Volume, &sc.Change
	if flags.Changed("zero") || flags.Changed("compressible") || flags.Changed("duplicate") || flags.Changed("file") {
		// Fractions given replace the preset's mix: unnamed classes are 0.
		v.Zero, v.Compressible, v.Duplicate, v.File = o.zero, o.compressible, o.duplicate, o.file
		sc.Name = "custom"
	}
	if flags.Changed("ratio") {
		v.Ratio = o.ratio
	}
	if flags.Changed("change-rate") {
		c.Rate = o.changeRate
	}
	if err := o.change(c); err != nil {
		return sc, err
	}
	if err := sc.Validate(); err != nil {
		return sc, usageError{err}
	}
	return sc, nil
}

// volumeSize is --size, or on a device without --size the device's size:
// there the scenario fills it unless --size says less.
func (o *benchOptions) volumeSize(flags *pflag.FlagSet) (int64, error) {
	size, err := units.ParseSize(o.size)
	if err != nil || size <= 0 {
		return 0, usagef("--size %q: want a positive size such as 4GiB", o.size)
	}
	if o.device == "" || flags.Changed("size") {
		return size, nil
	}
	f, err := os.Open(o.device)
	if err != nil {
		return 0, fmt.Errorf("--device: %w", err)
	}
	size, err = f.Seek(0, io.SeekEnd)
	f.Close()
	if err != nil || size <= 0 {
		return 0, fmt.Errorf("--device %s: cannot tell its size", o.device)
	}
	return size, nil
}

// checkFigures checks the fractions, the ratio and the counts given.
func (o *benchOptions) checkFigures() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"zero", o.zero}, {"compressible", o.compressible}, {"duplicate", o.duplicate}, {"file", o.file}, {"change-rate", o.changeRate}} {
		if err := checkShare(f.name, f.v); err != nil {
			return err
		}
	}
	if math.IsNaN(o.ratio) || math.IsInf(o.ratio, 0) {
		return usagef("--ratio %g: want %g to %g", o.ratio, bench.MinRatio, bench.MaxRatio)
	}
	if err := checkCount("workers", o.workers, maxWorkers); err != nil {
		return err
	}
	return checkCount("connections", o.backend.connections, maxConnections)
}

// change applies the change flags given to the scenario's change.
func (o *benchOptions) change(c *bench.ChangeSpec) error {
	if o.changePattern != "" {
		c.Pattern = bench.Pattern(o.changePattern)
	}
	if o.writeSize != "" {
		ws, err := units.ParseSize(o.writeSize)
		if err != nil || ws <= 0 {
			return usagef("--write-size %q: want a size such as 4KiB", o.writeSize)
		}
		c.WriteSize = ws
	}
	if o.clusters != 0 {
		c.Clusters = o.clusters
	}
	if o.changeContent != "" {
		if err := c.Content.UnmarshalText([]byte(o.changeContent)); err != nil {
			return usageError{err}
		}
	}
	return nil
}

// settings are the main runs' settings: the flags given, parsed like sweep
// values.
func (o *benchOptions) settings(flags *pflag.FlagSet) (bench.Settings, error) {
	var s bench.Settings
	for _, kv := range []struct{ key, flag, value string }{
		{"workers", "workers", fmt.Sprint(o.workers)}, {"chunker", "chunker", o.chunker}, {"zstd", "zstd", o.zstd}, {"pack", "pack", o.pack},
	} {
		if !flags.Changed(kv.flag) {
			continue
		}
		var err error
		if s, err = (bench.Sweep{Key: kv.key}).Apply(s, kv.value); err != nil {
			return s, usagef("--%s: %v", kv.flag, err)
		}
	}
	return s, nil
}

// lists parses the operations, the sweeps and the raw speed test's flags.
func (o *benchOptions) lists(cfg *bench.Config) error {
	for _, s := range o.ops {
		op, err := bench.ParseOp(s)
		if err != nil {
			return usageError{err}
		}
		cfg.Ops = append(cfg.Ops, op)
	}
	for _, s := range o.sweeps {
		sw, err := bench.ParseSweep(s)
		if err != nil {
			return usageError{err}
		}
		cfg.Sweeps = append(cfg.Sweeps, sw)
	}
	cfg.Raw.Skip = o.noRaw
	if o.rawSize != "" {
		n, err := units.ParseSize(o.rawSize)
		if err != nil || n <= 0 {
			return usagef("--raw-size %q: want a size such as 512MiB", o.rawSize)
		}
		cfg.Raw.Size = n
	}
	return nil
}

func (o *benchOptions) connections() int { return o.backend.connections }

// args repeats the storage flags for a child process.
func (b backendOptions) args() []string {
	var a []string
	if b.connections > 0 {
		a = append(a, fmt.Sprintf("--connections=%d", b.connections))
	}
	if b.s3Endpoint != "" {
		a = append(a, "--s3-endpoint="+b.s3Endpoint)
	}
	if b.s3Region != "" {
		a = append(a, "--s3-region="+b.s3Region)
	}
	if b.s3PathStyle {
		a = append(a, "--s3-path-style")
	}
	if b.s3CABundle != "" {
		a = append(a, "--s3-ca-bundle="+b.s3CABundle)
	}
	if b.s3ChecksumWR {
		a = append(a, "--s3-checksum-when-required")
	}
	return a
}

// commandLine is the command as given, for the report.
func commandLine(cmd *cobra.Command) string {
	parts := []string{cmd.CommandPath()}
	visit := func(f *pflag.Flag) {
		if f.Name == "child" {
			return
		}
		if f.Value.Type() == "bool" {
			parts = append(parts, "--"+f.Name)
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			if f.Value.Type() == "stringSlice" {
				parts = append(parts, "--"+f.Name, strings.Join(sv.GetSlice(), ","))
				return
			}
			for _, v := range sv.GetSlice() {
				parts = append(parts, "--"+f.Name, v)
			}
			return
		}
		parts = append(parts, "--"+f.Name, f.Value.String())
	}
	cmd.Flags().Visit(visit)
	return strings.Join(parts, " ")
}

// writeFileWith creates path with what write writes.
func writeFileWith(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
