package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend/s3"
)

// Config describes a benchmark.
type Config struct {
	Scenario Scenario
	// Corpus directories for a scenario with file data (default
	// DefaultCorpusDirs of the running Go).
	Corpus []string
	// Runs is how many times each operation is measured (default 1);
	// reports give the median and the range.
	Runs int
	// Ops to measure (default all). Every run starts with a full export;
	// an incremental import needs the full import and incremental export
	// before it. Operations run for that and not asked for are not
	// recorded.
	Ops []Op
	// Settings of the main mover runs; each value of each sweep runs as a
	// variant of them.
	Settings Settings
	Sweeps   []Sweep
	// Peers are other tools to run on the same scenario in the same run,
	// interleaved: "restic", "kopia". A peer that is not installed is
	// reported as such, not run.
	Peers []string

	// Repo is where the runs' repositories are created (a fresh one per
	// run and variant, removed afterwards): a directory, or
	// s3://BUCKET/PREFIX when Backend supports it. Default: Work/repos.
	Repo string
	// Backend opens repository locations (default DirBackend).
	Backend BackendFunc
	// S3 tells peers how to reach an s3:// Repo: endpoint URL, path-style
	// addressing, CA bundle. Credentials come from the environment.
	S3 S3Peer
	// Work is a directory for the image file, restore targets and peers'
	// caches. Required.
	Work string
	// Device, with DestroyData, is a block device the scenario is written
	// to: exports read it, imports write it. Its contents are destroyed.
	Device      string
	DestroyData bool
	// OnDisk writes the scenario to an image file in Work and exports read
	// it from there; otherwise the volume is computed on the fly (no disk
	// in the path). Peers need a file, so they imply OnDisk.
	OnDisk bool
	// Sparse makes the on-the-fly volume report its zero regions as holes,
	// as a sparse file or a CSI allocation map does: they are never read.
	Sparse bool
	// Cold drops the image file's cached pages before each export; by
	// default it is read into the page cache first (warm). A device is
	// always cold.
	Cold bool
	// NoVerify skips comparing restored volumes with the scenario (done
	// after each import of the first round, untimed).
	NoVerify bool
	// Raw measures the raw sequential speed of the storage under Work (or
	// the device).
	Raw RawOptions

	// Exec is the command that runs one job in a child process (e.g.
	// mover bench --child), reading a Job on stdin and writing a
	// JobResult on stdout; ExecEnv is added to its environment. Child
	// processes give honest CPU time and peak memory per run. Empty: jobs
	// run in this process, and peak memory is this process's peak so far.
	Exec    []string
	ExecEnv []string
	// KDF for the benchmark repositories (default repo.DefaultKDF()).
	KDF repo.KDFParams
	// Polynomial fixes the content-defined chunker's polynomial of every
	// repository, so that runs cut alike (tests); 0 draws one per
	// repository, as mover init does.
	Polynomial uint64
	// Command is the command line recorded in reports.
	Command string
	// MoverVersion is the version of the mover measured, recorded in
	// reports (e.g. "v1.2.0-3-gabc123"): the caller's build information
	// (mover's linked version, module version or VCS revision). Empty:
	// the checkout's `git describe`, else "unknown".
	MoverVersion string
	// LoadAverage reads the machine's 1-minute load average, before and
	// after the benchmark (default: /proc/loadavg). A load above
	// LoadPerCore per core before the run is reported as a warning.
	LoadAverage func() float64
	// Progress receives one line per step (nil: silent).
	Progress func(string)
}

// S3Peer says how peers reach an S3 repository location.
type S3Peer struct {
	Endpoint  string // URL; empty: AWS
	PathStyle bool
	CABundle  string
}

// ErrConfig is wrapped by every error about a malformed Config.
var ErrConfig = errors.New("invalid benchmark")

const benchPassword = "mover-bench"

// runner is one benchmark in progress.
type runner struct {
	cfg      Config
	rep      *Report
	base     *Volume
	changed  *Changed
	source   string // "" on the fly; else the image file or device
	repoRoot string
	ops      map[Op]bool
	samples  map[resultKey][]Sample
	order    []resultKey
}

type resultKey struct {
	tool, variant string
	op            Op
}

// contender is one tool, or one variant of mover, measured every round.
type contender struct {
	tool     string
	variant  string // sweep value as KEY=VALUE; "" for the main runs
	settings Settings
	peer     Peer
}

func (r *runner) logf(format string, args ...any) {
	if r.cfg.Progress != nil {
		r.cfg.Progress(fmt.Sprintf(format, args...))
	}
}

func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if err := c.Scenario.Validate(); err != nil {
		return err
	}
	if c.Work == "" {
		return bad("a work directory is needed")
	}
	// Peers record absolute paths (restic restores the image's absolute
	// path under its target directory).
	abs, err := filepath.Abs(c.Work)
	if err != nil {
		return fmt.Errorf("%w: work directory: %w", ErrConfig, err)
	}
	c.Work = abs
	if c.Runs == 0 {
		c.Runs = 1
	}
	if c.Runs < 0 || c.Runs > 1000 {
		return bad("runs %d must be 1 to 1000", c.Runs)
	}
	if len(c.Ops) == 0 {
		c.Ops = AllOps()
	}
	if c.Device != "" && !c.DestroyData {
		return bad("writing the scenario to %s destroys its contents: confirm with DestroyData (--destroy-data)", c.Device)
	}
	if c.Device != "" && !isBlockDevice(c.Device) {
		return bad("%s is not a block device", c.Device)
	}
	for _, p := range c.Peers {
		if p != "restic" && p != "kopia" {
			return bad("unknown peer %q (want restic or kopia)", p)
		}
	}
	for _, sw := range c.Sweeps {
		for _, v := range sw.Values {
			if _, err := sw.Apply(c.Settings, v); err != nil {
				return err
			}
		}
	}
	if _, err := chunkParams(c.Settings.Chunker, checkPolynomial); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if c.Backend == nil {
		c.Backend = DirBackend
	}
	if c.LoadAverage == nil {
		c.LoadAverage = loadAverage
	}
	if c.KDF == (repo.KDFParams{}) {
		c.KDF = repo.DefaultKDF()
	}
	return nil
}

// Run runs the benchmark: for each round, every contender (mover with the
// main settings, each sweep value, each installed peer) in an order that
// rotates by round, each in fresh repositories, performing the operations
// in order. It returns the report; an error in any run stops everything.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	r := &runner{cfg: cfg, ops: map[Op]bool{}, samples: map[resultKey][]Sample{}}
	for _, o := range cfg.Ops {
		r.ops[o] = true
	}
	r.rep = &Report{Version: ReportVersion, Started: start.UTC().Truncate(time.Second), Machine: machineInfo(ctx, cfg.MoverVersion),
		Scenario: cfg.Scenario, Command: cfg.Command, Ops: cfg.Ops, Settings: cfg.Settings, Sweeps: cfg.Sweeps}
	r.rep.Machine.LoadBefore = cfg.LoadAverage()
	r.rep.LoadWarning = loadWarning(r.rep.Machine.LoadBefore, r.rep.Machine.CPUs)
	if err := os.MkdirAll(cfg.Work, 0o755); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	var corpus *Corpus
	if cfg.Scenario.Volume.File > 0 {
		if len(r.cfg.Corpus) == 0 {
			r.cfg.Corpus = DefaultCorpusDirs(GoRoot())
		}
		var err error
		if corpus, err = NewCorpus(r.cfg.Corpus...); err != nil {
			return nil, err
		}
	}
	var err error
	if r.base, r.changed, err = cfg.Scenario.Build(corpus); err != nil {
		return nil, err
	}
	r.describeScenario()

	contenders := []contender{{tool: "mover", settings: cfg.Settings}}
	for _, sw := range cfg.Sweeps {
		for _, v := range sw.Values {
			s, _ := sw.Apply(cfg.Settings, v)
			contenders = append(contenders, contender{tool: "mover", variant: sw.Key + "=" + v, settings: s})
		}
	}
	for _, p := range cfg.Peers {
		info := detectPeer(ctx, p, &cfg)
		r.rep.Peers = append(r.rep.Peers, info)
		if info.Available {
			contenders = append(contenders, contender{tool: p, peer: info})
		} else {
			r.logf("%s: %s", p, info.Note)
		}
	}
	peers := len(contenders) > 1+countVariants(cfg.Sweeps)

	// Raw speeds first: on a device, the write test destroys what is on it.
	if !cfg.Raw.Skip {
		r.measureRaw(ctx)
	}
	if err := r.prepareSource(ctx, peers); err != nil {
		return nil, err
	}
	defer r.removeSource()
	r.repoRoot = r.rootLocation(start)
	defer func() {
		r.removeLocation(context.WithoutCancel(ctx), r.repoRoot)
		if cfg.Repo == "" {
			os.Remove(filepath.Dir(r.repoRoot)) // Work/repos, if empty
		}
	}()
	r.rep.Setup.Repo = r.repoRoot
	r.rep.Setup.RepoFS = r.locationFS(r.repoRoot)

	for round := range cfg.Runs {
		for i := range contenders {
			c := contenders[(i+round)%len(contenders)]
			var err error
			switch c.tool {
			case "mover":
				err = r.runMover(ctx, round, c)
			case "restic":
				err = r.runRestic(ctx, round, c.peer)
			case "kopia":
				err = r.runKopia(ctx, round)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	r.rep.Machine.LoadAfter = cfg.LoadAverage()
	r.rep.Seconds = since(start)
	r.rep.build(r.order, r.samples)
	return r.rep, nil
}

func countVariants(sweeps []Sweep) int {
	n := 0
	for _, sw := range sweeps {
		n += len(sw.Values)
	}
	return n
}

func (r *runner) describeScenario() {
	rep := r.rep
	rep.ScenarioText = r.cfg.Scenario.String()
	rep.ChangeText = r.cfg.Scenario.ChangeString()
	rep.ChangedBytes = r.changed.Bytes()
	rep.ChangeExtents = len(r.changed.Changes())
	rep.ClassBytes = map[string]int64{}
	for c, n := range r.base.ClassBytes() {
		rep.ClassBytes[c.String()] = n
	}
}

func (r *runner) record(tool, variant string, op Op, s Sample) {
	k := resultKey{tool, variant, op}
	if _, ok := r.samples[k]; !ok {
		r.order = append(r.order, k)
	}
	r.samples[k] = append(r.samples[k], s)
	name := tool
	if variant != "" {
		name += " " + variant
	}
	r.logf("%s %s: %.2f s (%s), %.1f CPU s, peak RSS %s", name, op, s.Seconds, mbps(r.base.Size(), s.Seconds), s.CPU(), units.Bytes(s.PeakRSS))
}

func mbps(size int64, secs float64) string {
	if secs <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MB/s", float64(size)/secs/1e6)
}

// runMover runs one round of mover with one contender's settings.
func (r *runner) runMover(ctx context.Context, round int, c contender) error {
	name := "mover"
	if c.variant != "" {
		name += " " + c.variant
	}
	loc := r.location(round, name)
	defer r.removeLocation(context.WithoutCancel(ctx), loc)
	if err := r.initRepo(ctx, loc, c.settings); err != nil {
		return err
	}
	job := Job{Repo: loc, Password: benchPassword, Settings: c.settings, Scenario: r.cfg.Scenario, Corpus: r.cfg.Corpus,
		Source: r.sourcePath(), Sparse: r.cfg.Sparse}
	needInc := r.ops[IncrementalExport] || r.ops[IncrementalImport]
	needImport := r.ops[FullImport] || r.ops[IncrementalImport]
	if err := r.prepareRead(); err != nil {
		return err
	}
	job.Op = FullExport
	full, err := r.do(ctx, job)
	if err != nil {
		return err
	}
	full.Sample.RepoBytes = r.locationBytes(ctx, loc)
	if r.ops[FullExport] {
		r.record("mover", c.variant, FullExport, full.Sample)
	}
	var inc *JobResult
	if needInc {
		if err := r.changeSource(ctx, false); err != nil {
			return err
		}
		defer r.changeSource(context.WithoutCancel(ctx), true)
		if err := r.prepareRead(); err != nil {
			return err
		}
		job.Op, job.Base = IncrementalExport, full.Snapshot
		if inc, err = r.do(ctx, job); err != nil {
			return err
		}
		inc.Sample.RepoBytes = r.locationBytes(ctx, loc)
		if r.ops[IncrementalExport] {
			r.record("mover", c.variant, IncrementalExport, inc.Sample)
		}
	}
	if !needImport {
		return nil
	}
	target := r.cfg.Device
	if target == "" {
		target = filepath.Join(r.cfg.Work, "target.img")
		os.Remove(target)
		defer os.Remove(target)
	}
	job.Op, job.Snapshot, job.Base, job.Target = FullImport, full.Snapshot, "", target
	res, err := r.do(ctx, job)
	if err != nil {
		return err
	}
	if r.ops[FullImport] {
		r.record("mover", c.variant, FullImport, res.Sample)
	}
	if err := r.verify(ctx, round, target, r.base, name+" full import"); err != nil {
		return err
	}
	if !r.ops[IncrementalImport] {
		return nil
	}
	job.Op, job.Snapshot, job.Base = IncrementalImport, inc.Snapshot, full.Snapshot
	if res, err = r.do(ctx, job); err != nil {
		return err
	}
	r.record("mover", c.variant, IncrementalImport, res.Sample)
	return r.verify(ctx, round, target, r.changed, name+" incremental import")
}

// verify compares a restored target with the volume it must hold, in the
// first round.
func (r *runner) verify(ctx context.Context, round int, path string, want interface {
	io.ReaderAt
	Size() int64
}, what string) error {
	if round > 0 || r.cfg.NoVerify {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("verifying %s: %w", what, err)
	}
	defer f.Close()
	if err := Compare(ctx, f, want, want.Size()); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	r.logf("%s: restored volume verified", what)
	return nil
}

// initRepo creates a benchmark repository with the settings that are
// fixed at init.
func (r *runner) initRepo(ctx context.Context, loc string, s Settings) error {
	pol := r.cfg.Polynomial
	if pol == 0 {
		var err error
		if pol, err = chunk.NewPolynomial(); err != nil {
			return err
		}
	}
	p, err := chunkParams(s.Chunker, pol)
	if err != nil {
		return err
	}
	be, err := r.cfg.Backend(ctx, loc, true)
	if err != nil {
		return err
	}
	defer be.Close()
	rp, err := repo.Init(ctx, be, []byte(benchPassword), repo.InitOptions{Chunking: &p, PackSize: s.PackSize, KDF: r.cfg.KDF})
	if err != nil {
		return fmt.Errorf("creating repository %s: %w", loc, err)
	}
	return rp.Close()
}

// do runs a job in a child process (or here) and measures it.
func (r *runner) do(ctx context.Context, job Job) (*JobResult, error) {
	if len(r.cfg.Exec) == 0 {
		u0 := selfUsage()
		t := time.Now()
		res, err := RunJob(ctx, job, r.cfg.Backend)
		if err != nil {
			return nil, fmt.Errorf("mover %s: %w", job.Op, err)
		}
		u1 := selfUsage()
		res.Sample.Seconds = since(t)
		res.Sample.UserCPU = (u1.user - u0.user).Seconds()
		res.Sample.SysCPU = (u1.sys - u0.sys).Seconds()
		res.Sample.PeakRSS = u1.maxRSS
		return res, nil
	}
	in, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, r.cfg.Exec[0], r.cfg.Exec[1:]...)
	cmd.Env = append(os.Environ(), r.cfg.ExecEnv...)
	cmd.Stdin = bytes.NewReader(in)
	out, u, secs, err := runMeasured(cmd)
	if err != nil {
		return nil, fmt.Errorf("mover %s: %w", job.Op, err)
	}
	var res JobResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("mover %s: reading the child's result: %w", job.Op, err)
	}
	res.Sample.Seconds = secs
	// The child's own high-water mark at its end is exact; polling can
	// miss the last moments.
	res.Sample.UserCPU, res.Sample.SysCPU, res.Sample.PeakRSS = u.user.Seconds(), u.sys.Seconds(), max(res.Sample.PeakRSS, u.maxRSS)
	return &res, nil
}

// runMeasured runs cmd and returns its stdout, resource use and wall
// seconds. A failure is one line: the last line the command printed on
// stderr, with the exit status.
func runMeasured(cmd *exec.Cmd) ([]byte, usage, float64, error) {
	var stdout, stderr bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &stdout
	}
	cmd.Stderr = &stderr
	t := time.Now()
	err := cmd.Start()
	var peak int64
	if err == nil {
		stop := watchPeakRSS(cmd.Process.Pid)
		err = cmd.Wait()
		peak = stop()
	}
	secs := since(t)
	if err != nil {
		// The command's own one-line error, without mover's prefix.
		if msg := strings.TrimPrefix(lastLine(stderr.String()), "mover: "); msg != "" {
			return nil, usage{}, 0, fmt.Errorf("%s (%w)", msg, err)
		}
		return nil, usage{}, 0, err
	}
	var u usage
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		u = cpuOf(ru)
	}
	u.maxRSS = peak
	return stdout.Bytes(), u, secs, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func isBlockDevice(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}

func gomaxprocs() int { return runtime.GOMAXPROCS(0) }

// resticS3 turns s3://BUCKET/PREFIX into restic's repository string.
func resticS3(loc string, p S3Peer) (string, []string, error) {
	bucket, prefix, err := s3.ParseURL(loc)
	if err != nil {
		return "", nil, err
	}
	ep := strings.TrimRight(p.Endpoint, "/")
	if ep == "" {
		ep = "s3.amazonaws.com"
	}
	var args []string
	if p.PathStyle {
		args = append(args, "-o", "s3.bucket-lookup=path")
	}
	if p.CABundle != "" {
		args = append(args, "--cacert", p.CABundle)
	}
	return "s3:" + ep + "/" + strings.Trim(bucket+"/"+prefix, "/"), args, nil
}
