package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/internal/testutil"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/s3"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	"github.com/blockmover/blockmover/repo/repotest"
)

// TestMain lets the end-to-end test run this test binary as the child
// process that performs one measured job (mover bench --child).
func TestMain(m *testing.M) {
	if os.Getenv("BLOCKMOVER_BENCH_CHILD") == "1" {
		if err := ServeChild(context.Background(), os.Stdin, os.Stdout, DirBackend); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	s3test.SetTestEnv()
	os.Exit(m.Run())
}

// testKDF keeps key derivation cheap in tests.
var testKDF = repotest.KDF()

// smallScenario is a 64 MiB volume of every class with a clustered change.
func smallScenario() Scenario {
	return Scenario{
		Name:   "small",
		Volume: Spec{Size: 64 << 20, Seed: 3, Zero: 0.25, Compressible: 0.25, Ratio: 2, Duplicate: 0.25, RegionSize: 4 << 20},
		Change: ChangeSpec{Rate: 0.01, Pattern: Clustered, WriteSize: 4 << 10, Clusters: 4},
	}
}

// TestRunEndToEnd runs every operation on a small scenario, each run a
// child process, with a sweep, and checks the figures against the
// scenario. Restored volumes are verified by Run itself.
func TestRunEndToEnd(t *testing.T) {
	sc := smallScenario()
	var progress []string
	cfg := Config{
		Scenario: sc, Runs: 1, Work: t.TempDir(), KDF: testKDF, Polynomial: checkPolynomial,
		Sweeps: []Sweep{{Key: "workers", Values: []string{"1", "2"}}},
		Raw:    RawOptions{Size: 8 << 20, QueueDepths: []int{1, 4}},
		Exec:   []string{os.Args[0]}, ExecEnv: []string{"BLOCKMOVER_BENCH_CHILD=1"},
		Progress: func(s string) { progress = append(progress, s) },
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Setup.Child || !rep.Setup.Verify {
		t.Fatalf("setup %+v: want child runs and verification", rep.Setup)
	}
	// Both imports of each of the three contenders, in the first round.
	if got := strings.Join(progress, "\n"); strings.Count(got, "restored volume verified") != 6 {
		t.Errorf("verification of the imports not reported:\n%s", got)
	}
	size := float64(sc.Volume.Size)
	get := func(variant string, op Op) Sample {
		t.Helper()
		r, ok := rep.Find("mover", variant, op)
		if !ok || len(r.Runs) != 1 {
			t.Fatalf("no single run of mover %s %s", variant, op)
		}
		s := r.Runs[0]
		if s.Seconds <= 0 || s.PipelineSeconds <= 0 || s.CPU() <= 0 || s.PeakRSS < 16<<20 {
			t.Errorf("%s %s: implausible measurement %+v", variant, op, s)
		}
		return s
	}
	for _, variant := range []string{"", "workers=1", "workers=2"} {
		full := get(variant, FullExport)
		if full.ReadBytes != sc.Volume.Size {
			t.Errorf("%s: full export read %d bytes of %d", variant, full.ReadBytes, sc.Volume.Size)
		}
		if f := float64(full.ZeroBytes) / size; math.Abs(f-sc.Volume.Zero) > 0.01 {
			t.Errorf("%s: zero bytes are %.4f of the volume, the scenario has %.2f", variant, f, sc.Volume.Zero)
		}
		// Random data is stored as is, compressible data at its ratio,
		// duplicates not at all but for the chunks at their edges.
		random, comp := size*(1-sc.Volume.Zero-sc.Volume.Compressible-sc.Volume.Duplicate), size*sc.Volume.Compressible
		lo, hi := random+comp/2/1.03, random+comp/2*1.03+size*sc.Volume.Duplicate+float64(2<<20)
		if s := float64(full.StoredBytes); s < lo || s > hi {
			t.Errorf("%s: full export stored %.1f MiB, want %.1f to %.1f", variant, s/(1<<20), lo/(1<<20), hi/(1<<20))
		}
		inc := get(variant, IncrementalExport)
		if inc.ReadBytes > sc.Volume.Size*4/10 || inc.ReusedBytes == 0 {
			t.Errorf("%s: incremental export read %d bytes and reused %d for 4 clusters of changes", variant, inc.ReadBytes, inc.ReusedBytes)
		}
		fi := get(variant, FullImport)
		if fi.WrittenBytes+fi.ZeroedBytes != sc.Volume.Size {
			t.Errorf("%s: full import wrote %d and zeroed %d of %d bytes", variant, fi.WrittenBytes, fi.ZeroedBytes, sc.Volume.Size)
		}
		ii := get(variant, IncrementalImport)
		if ii.SkippedBytes < sc.Volume.Size/2 {
			t.Errorf("%s: incremental import skipped only %d bytes", variant, ii.SkippedBytes)
		}
	}
	if w := get("workers=1", FullExport).Workers; w != 1 {
		t.Errorf("sweep workers=1 ran %d workers", w)
	}
	main, _ := rep.Find("mover", "", FullExport)
	if len(main.Stages) != 7 || main.Bottleneck == "" {
		t.Errorf("full export stages %+v, bottleneck %q", main.Stages, main.Bottleneck)
	}
	for _, s := range main.Stages {
		// Every stage is timed, compress and encrypt each on its own.
		if s.Seconds <= 0 || s.Bytes <= 0 {
			t.Errorf("full export stage %s: %.3f s, %d bytes", s.Name, s.Seconds, s.Bytes)
		}
	}
	if rep.Raw == nil || rep.Raw.Note == "" && len(rep.Raw.Points) != 4 {
		t.Errorf("raw speed: %+v", rep.Raw)
	}
	// The report survives JSON and renders as text.
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Results) != len(rep.Results) || back.Scenario != rep.Scenario {
		t.Fatalf("JSON round trip: %v", err)
	}
	var text strings.Builder
	if err := rep.Text(&text); err != nil || !strings.Contains(text.String(), "bottleneck:") || !strings.Contains(text.String(), "sweep workers") {
		t.Fatalf("text report: %v\n%s", err, text.String())
	}
	t.Logf("\n%s", text.String())
}

// TestIncrementalExportOfScenario: an incremental export driven by the
// scenario's change list gives exactly the chunk list of a full export of
// the changed volume, for a volume read whole and one read sparse.
func TestIncrementalExportOfScenario(t *testing.T) {
	ctx := context.Background()
	sc := smallScenario()
	sc.Change = ChangeSpec{Rate: 0.0005, Pattern: Scattered, WriteSize: 4 << 10}
	base, changed, err := sc.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	be, _ := repotest.Dir(t, "")
	r := repotest.Init(t, be, repo.InitOptions{Chunking: repotest.Chunking(func(p *chunk.Params) { p.SegmentSize = 16 << 20 })})
	for _, sparse := range []bool{false, true} {
		src, csrc := mover.Source(base), mover.Source(changed)
		if sparse {
			src, csrc = base.Sparse(), changed.Sparse()
		}
		first, err := mover.Export(ctx, src, r, mover.ExportOptions{Volume: "v"})
		if err != nil {
			t.Fatal(err)
		}
		inc, err := mover.Export(ctx, csrc, r, mover.ExportOptions{Volume: "v", Base: first.Snapshot, Changes: changed.Changes()})
		if err != nil {
			t.Fatal(err)
		}
		full, err := mover.Export(ctx, csrc, r, mover.ExportOptions{Volume: "v"})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(inc.Snapshot.Pages) != fmt.Sprint(full.Snapshot.Pages) {
			t.Fatalf("sparse %v: the incremental export's pages differ from a full export of the changed volume", sparse)
		}
		if inc.ReadBytes >= full.ReadBytes/2 {
			t.Errorf("sparse %v: incremental export read %d bytes, a full one %d", sparse, inc.ReadBytes, full.ReadBytes)
		}
		if sparse && first.ReadBytes != sc.Volume.Size-base.ClassBytes()[Zero] {
			t.Errorf("sparse export read %d bytes, want the %d that are not zero regions", first.ReadBytes, sc.Volume.Size-base.ClassBytes()[Zero])
		}
	}
}

// TestRunWithRestic runs restic beside mover on the same image file and
// compares them. It fails without restic (make tools installs it) unless
// BLOCKMOVER_SKIP_PEERS=1.
func TestRunWithRestic(t *testing.T) {
	if _, err := exec.LookPath(peerPath("restic")); err != nil {
		if os.Getenv("BLOCKMOVER_SKIP_PEERS") == "1" {
			t.Skip("restic not installed and BLOCKMOVER_SKIP_PEERS=1")
		}
		t.Fatal("restic not installed: run make tools (apt-get install restic), or set BLOCKMOVER_SKIP_PEERS=1")
	}
	sc := smallScenario()
	sc.Volume.Size = 32 << 20
	rep, err := Run(context.Background(), Config{Scenario: sc, Runs: 1, Work: t.TempDir(), KDF: testKDF, Polynomial: checkPolynomial, Peers: []string{"restic", "kopia"},
		Ops: []Op{FullExport, IncrementalExport, FullImport}, Raw: RawOptions{Skip: true}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rep.Setup.Source, "image file") {
		t.Errorf("peers must read an image file, source: %s", rep.Setup.Source)
	}
	for _, op := range []Op{FullExport, IncrementalExport, FullImport} {
		r, ok := rep.Find("restic", "", op)
		if !ok || len(r.Runs) != 1 || r.Seconds.Median <= 0 || r.CPU.Median <= 0 || r.PeakRSS.Median <= 0 {
			t.Errorf("restic %s: %+v", op, r)
		}
	}
	// A restore is timed as restic returned and, durable, with the
	// fdatasync after it; mover's import returns durable.
	if r, _ := rep.Find("restic", "", FullImport); r.Returned.Median <= 0 || r.Returned.Median > r.Seconds.Median {
		t.Errorf("restic restore: %.3f s as returned, %.3f s durable", r.Returned.Median, r.Seconds.Median)
	}
	if r, _ := rep.Find("mover", "", FullImport); r.Returned != r.Seconds {
		t.Errorf("mover import: %+v as returned, %+v durable", r.Returned, r.Seconds)
	}
	if r, _ := rep.Find("restic", "", FullExport); r.RepoBytes.Median < float64(sc.Volume.Size)/4 {
		t.Errorf("restic repository of %v bytes", r.RepoBytes.Median)
	}
	available := 0
	for _, p := range rep.Peers {
		if p.Available {
			available++
		}
	}
	if len(rep.Comparisons) != 3*available || rep.Comparisons[0].Throughput <= 0 || rep.Comparisons[0].RepoBytes <= 0 {
		t.Errorf("comparisons %+v", rep.Comparisons)
	}
	var kopia *Peer
	for i := range rep.Peers {
		if rep.Peers[i].Name == "kopia" {
			kopia = &rep.Peers[i]
		}
	}
	if _, err := exec.LookPath(peerPath("kopia")); err != nil && (kopia == nil || kopia.Available || kopia.Note == "") {
		t.Errorf("kopia is not installed, the report says %+v", kopia)
	}
}

func TestConfigRejected(t *testing.T) {
	ok := Config{Scenario: smallScenario(), Work: t.TempDir()}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no work directory", func(c *Config) { c.Work = "" }},
		{"device without consent", func(c *Config) { c.Device = "/dev/null" }},
		{"not a block device", func(c *Config) { c.Device, c.DestroyData = "/dev/null", true }},
		{"unknown peer", func(c *Config) { c.Peers = []string{"tar"} }},
		{"bad sweep", func(c *Config) { c.Sweeps = []Sweep{{Key: "workers", Values: []string{"0"}}} }},
		{"bad chunker", func(c *Config) { c.Settings.Chunker = "cdc-1k" }},
		{"bad scenario", func(c *Config) { c.Scenario.Volume.Zero = 2 }},
		{"negative runs", func(c *Config) { c.Runs = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			if _, err := Run(context.Background(), c); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestParseSweep(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Settings
		ok   bool
	}{
		{"workers=1,2,4,8", Settings{Workers: 8}, true},
		{"chunker=cdc-1Mi,cdc-4Mi,fixed-1Mi", Settings{Chunker: "fixed-1Mi"}, true},
		{"zstd=fastest,default,better", Settings{Compression: "better"}, true},
		{"pack=16Mi,64Mi", Settings{PackSize: 64 << 20}, true},
		{"pack=1k", Settings{}, false},
		{"zstd=max", Settings{}, false},
		{"chunker=cdc-7m", Settings{}, false},
		{"threads=4", Settings{}, false},
		{"workers", Settings{}, false},
	} {
		sw, err := ParseSweep(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if !tc.ok {
			continue
		}
		got, err := sw.Apply(Settings{}, sw.Values[len(sw.Values)-1])
		if err != nil || got != tc.want {
			t.Errorf("%q: last value gives %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// TestRunOnDevice writes the scenario to a block device and runs on it:
// the raw speed with O_DIRECT, exports reading the device, imports
// restoring onto it (verified), restic reading it through stdin and
// restoring onto it with dump. The device holds the scenario afterwards.
func TestRunOnDevice(t *testing.T) {
	sc := smallScenario()
	sc.Volume.Size = 32 << 20
	dev := testutil.BlockDevice(t, sc.Volume.Size+1<<20)
	cfg := Config{Scenario: sc, Runs: 1, Work: t.TempDir(), KDF: testKDF, Polynomial: checkPolynomial, Device: dev,
		Raw: RawOptions{Size: 4 << 20, QueueDepths: []int{1, 4}}}
	if _, err := exec.LookPath("restic"); err == nil {
		cfg.Peers = []string{"restic"}
		cfg.Ops = []Op{FullExport, IncrementalExport, FullImport, IncrementalImport}
	}
	if _, err := Run(context.Background(), cfg); !errors.Is(err, ErrConfig) {
		t.Fatalf("a device without DestroyData: %v", err)
	}
	cfg.DestroyData = true
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Raw == nil || rep.Raw.Kind != "block device" || len(rep.Raw.Points) != 4 {
		t.Errorf("raw speed of the device: %+v", rep.Raw)
	}
	for _, op := range AllOps() {
		if _, ok := rep.Find("mover", "", op); !ok {
			t.Errorf("no mover %s", op)
		}
	}
	if len(cfg.Peers) > 0 {
		if _, ok := rep.Find("restic", "", FullImport); !ok {
			t.Error("no restic restore onto the device")
		}
	}
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, _ := NewVolume(sc.Volume, nil)
	if err := Compare(context.Background(), f, v, v.Size()); err != nil {
		t.Fatalf("the device does not hold the scenario after the runs: %v", err)
	}
}

// TestRunS3 runs mover and restic against an S3 repository location on a
// real S3 server (versitygw).
func TestRunS3(t *testing.T) {
	srv := s3test.Start(t, false)
	bucket := srv.NewBucket(t, false)
	sc := smallScenario()
	sc.Volume.Size = 32 << 20
	cfg := Config{Scenario: sc, Runs: 1, Work: t.TempDir(), KDF: testKDF, Polynomial: checkPolynomial, Raw: RawOptions{Skip: true},
		Repo:    "s3://" + bucket + "/bench",
		Backend: Backends(s3.Options{Endpoint: srv.Endpoint, PathStyle: true}),
		S3:      S3Peer{Endpoint: srv.Endpoint, PathStyle: true},
		Ops:     []Op{FullExport, FullImport}}
	if _, err := exec.LookPath("restic"); err == nil {
		cfg.Peers = []string{"restic"}
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Setup.RepoFS != "S3" {
		t.Errorf("repository file system %q", rep.Setup.RepoFS)
	}
	for _, r := range rep.Results {
		if r.Op == FullExport && r.RepoBytes.Median < float64(sc.Volume.Size)/4 {
			t.Errorf("%s: repository of %v bytes on S3", r.Tool, r.RepoBytes.Median)
		}
	}
	// Every repository was removed.
	be, err := cfg.Backend(context.Background(), "s3://"+bucket, false)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	left := 0
	be.List(context.Background(), "", func(backend.ObjectInfo) error { left++; return nil })
	if left != 0 {
		t.Errorf("%d objects left in the bucket", left)
	}
}

// TestMachineMoverVersion: the version the command passes in is what the
// report names; without one, the build's revision or the checkout's.
func TestMachineMoverVersion(t *testing.T) {
	if m := machineInfo(t.Context(), "v1.2.3-4-gabcdef"); m.Mover != "v1.2.3-4-gabcdef" || !strings.HasSuffix(m.String(), "mover v1.2.3-4-gabcdef") {
		t.Errorf("machineInfo with a version: %q (%s)", m.Mover, m)
	}
	if m := machineInfo(t.Context(), ""); m.Mover == "" {
		t.Error("machineInfo without a version: empty")
	}
}
