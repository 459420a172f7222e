package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo/backend"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestPodExportImport: in a pod (KUBERNETES_SERVICE_HOST set, stderr not a
// terminal) export and import log JSON, write their result to the
// termination log and push metrics to a Pushgateway.
func TestPodExportImport(t *testing.T) {
	c, dir := newCLI(t)
	c.env["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 16<<20)
	c.ok("init", "--segment-size", "8MiB")

	var mu sync.Mutex
	pushed := map[string]string{}
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		pushed[r.Method+" "+r.URL.Path] = string(b)
		mu.Unlock()
	}))
	defer gw.Close()

	term := filepath.Join(dir, "termination-log")
	r := c.ok("export", "--source", img, "--name", "pvc-1", "--termination-log", term, "--pushgateway", gw.URL)
	// Every line is a slog record, progress included (no raw progress
	// lines of another schema).
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		var rec struct{ Time, Level, Msg, Op string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Time == "" || rec.Level == "" || rec.Msg == "" || rec.Op != "export" {
			t.Errorf("stderr line is not a slog record of the export: %q", l)
		}
	}
	for _, want := range []string{`"msg":"export done"`, `"msg":"export progress"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("no structured %s log: %s", want, r.stderr)
		}
	}
	msg, err := os.ReadFile(term)
	if err != nil {
		t.Fatal(err)
	}
	var res exportJSON
	if err := json.Unmarshal(msg, &res); err != nil || res.Snapshot == "" || res.Size != 16<<20 || len(msg) > maxTerminationMessage {
		t.Fatalf("termination message %q: %v", msg, err)
	}
	// The pushed metrics carry no op or volume label: the grouping key
	// (the URL) gives them, as the Pushgateway requires.
	body, ok := pushedGroup(pushed, "PUT", map[string]string{"op": "export", "volume": "pvc-1"})
	if !ok {
		t.Fatalf("no PUT to the group op=export, volume=pvc-1: %v", pushed)
	}
	fams := checkExposition(t, body)
	for name, want := range map[string]float64{"mover_processed_bytes_total": 16 << 20, "mover_success": 1, "mover_volume_size_bytes": 16 << 20} {
		if got, ok := sampleValue(fams, name, nil); !ok || got != want {
			t.Errorf("pushed %s = %v (found %v), want %v", name, got, ok, want)
		}
	}
	if _, ok := sampleValue(fams, "mover_stage_seconds_total", map[string]string{"stage": "hash"}); !ok {
		t.Errorf("pushed metrics lack mover_stage_seconds_total{stage=\"hash\"}:\n%s", body)
	}
	if ts, ok := sampleValue(fams, "mover_last_success_timestamp_seconds", nil); !ok || time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("pushed mover_last_success_timestamp_seconds = %v (found %v), want about now", ts, ok)
	}
	if n, ok := sampleValue(fams, "mover_storage_requests_total", map[string]string{"operation": "put"}); !ok || n == 0 {
		t.Errorf("pushed mover_storage_requests_total{operation=\"put\"} = %v (found %v), want > 0", n, ok)
	}
	for _, l := range fams["mover_processed_bytes_total"].GetMetric()[0].GetLabel() {
		t.Errorf("pushed sample has label %s=%q", l.GetName(), l.GetValue())
	}

	// Import, and a failing import: the error is the termination message
	// and the one (JSON) line on stderr.
	out := filepath.Join(dir, "out.img")
	c.ok("import", "--snapshot", "latest:pvc-1", "--target", out, "--termination-log", term)
	msg, _ = os.ReadFile(term)
	var im importJSON
	if err := json.Unmarshal(msg, &im); err != nil || im.Size != 16<<20 {
		t.Fatalf("import termination message %q: %v", msg, err)
	}
	r = c.run("import", "--snapshot", "nosuch", "--target", out, "--termination-log", term)
	if r.code != exitNotFound || strings.Count(strings.TrimSpace(r.stderr), "\n") != 1 {
		t.Fatalf("failed import: exit %d, stderr %q", r.code, r.stderr)
	}
	var failed struct {
		Error     string
		Reason    string
		Retryable *bool
		ExitCode  int `json:"exit_code"`
	}
	msg, _ = os.ReadFile(term)
	if err := json.Unmarshal(msg, &failed); err != nil || !strings.Contains(failed.Error, "nosuch") ||
		failed.Reason != "SnapshotNotFound" || failed.Retryable == nil || *failed.Retryable || failed.ExitCode != exitNotFound || r.code != exitNotFound {
		t.Errorf("termination message of a failure: %q (exit %d)", msg, r.code)
	}
	if !strings.Contains(r.stderr, `"level":"ERROR"`) || !strings.Contains(r.stderr, "nosuch") {
		t.Errorf("stderr of a failure: %q", r.stderr)
	}

	// Outside a pod: text as before, no JSON logs.
	delete(c.env, "KUBERNETES_SERVICE_HOST")
	c.fails(exitNotFound, "nosuch", "import", "--snapshot", "nosuch", "--target", out)
}

// TestPodInterrupted: SIGTERM or SIGINT (the cause of the context main
// cancels) ends an export with exit 143 or 130, a clear message, and that
// message as the termination log, retryable.
func TestPodInterrupted(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 8<<20)
	c.ok("init")
	for _, tc := range []struct {
		sig    os.Signal
		code   int
		reason string
	}{
		{syscall.SIGTERM, exitTerminated, "Terminated"},
		{os.Interrupt, exitInterrupted, "Interrupted"},
	} {
		term := filepath.Join(dir, "termination-log")
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(signalCause{tc.sig})
		var out, errb bytes.Buffer
		env := &environment{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return c.env[k] }}
		code := run(ctx, []string{"export", "--source", img, "--name", "v", "--termination-log", term}, env)
		if code != tc.code || !strings.Contains(errb.String(), "interrupted by SIGTERM") || !strings.Contains(errb.String(), "rerun") {
			t.Fatalf("%v: exit %d, stderr %q", tc.sig, code, errb.String())
		}
		msg, _ := os.ReadFile(term)
		want := fmt.Sprintf(`"exit_code":%d,"reason":%q,"retryable":true}`, tc.code, tc.reason)
		if !strings.Contains(string(msg), `"error":"interrupted by SIGTERM`) || !strings.HasSuffix(string(msg), want) {
			t.Errorf("%v: termination message %q, want it to end in %s", tc.sig, msg, want)
		}
	}
}

// TestMetricsServed: --metrics-addr serves the text exposition format
// while the run goes on, parsed by prometheus's own parser: the run's
// metrics labelled op and volume, the Go and process collectors and the
// build info. The volume's size is there as soon as it is known, before
// any progress report, and absent (not 0) before.
func TestMetricsServed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &podState{metricsAddr: addr, op: "export", volume: `we"ird`}
	p.log = slog.New(slog.DiscardHandler)
	p.metrics = newRunMetrics("export", `we"ird`)
	stop, err := p.serveMetrics()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	labels := map[string]string{"op": "export", "volume": `we"ird`}
	scrape := func() map[string]*dto.MetricFamily {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
			t.Errorf("content type %q", ct)
		}
		return checkExposition(t, string(b))
	}
	fams := scrape()
	if _, ok := fams["mover_volume_size_bytes"]; ok {
		t.Errorf("mover_volume_size_bytes exported before the size is known")
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	v := buildVersion()
	if got, ok := sampleValue(fams, "mover_build_info", map[string]string{"version": v.Version, "goversion": v.Go}); !ok || got != 1 {
		t.Errorf("mover_build_info{version=%q} = %v (found %v)", v.Version, got, ok)
	}
	p.volumeKnown("ignored: --name was given", 100)
	fams = scrape()
	if got, ok := sampleValue(fams, "mover_volume_size_bytes", labels); !ok || got != 100 {
		t.Errorf("mover_volume_size_bytes before the first progress report = %v (found %v), want 100", got, ok)
	}
	p.observe("export", nil)(mover.Progress{Size: 100, DoneBytes: 40, ReadBytes: 40, NewBytes: 10})
	fams = scrape()
	for name, want := range map[string]float64{"mover_processed_bytes_total": 40, "mover_new_bytes_total": 10, "mover_finished": 0} {
		if got, ok := sampleValue(fams, name, labels); !ok || got != want {
			t.Errorf("%s%v = %v (found %v), want %v", name, labels, got, ok, want)
		}
	}
	if _, ok := fams["mover_last_success_timestamp_seconds"]; ok {
		t.Error("mover_last_success_timestamp_seconds before the run succeeded")
	}
}

// checkExposition parses s with prometheus's text parser and returns its
// families; every family must have samples.
func checkExposition(t *testing.T, s string) map[string]*dto.MetricFamily {
	t.Helper()
	if s == "" {
		t.Fatal("no metrics")
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(s))
	if err != nil {
		t.Fatalf("parsing the metrics: %v\n%s", err, s)
	}
	for name, f := range fams {
		if len(f.GetMetric()) == 0 {
			t.Errorf("family %s has no samples", name)
		}
	}
	return fams
}

// sampleValue returns the value of the sample of family name whose labels
// include want (nil: any sample), for counters, gauges and untyped.
func sampleValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetUntyped() != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// pushedGroup finds the body pushed with method to the Pushgateway group
// job=blockmover plus grouping, in bodies keyed "METHOD PATH" (the
// pusher orders the path's labels as it likes).
func pushedGroup(bodies map[string]string, method string, grouping map[string]string) (string, bool) {
	for k, body := range bodies {
		m, path, _ := strings.Cut(k, " ")
		parts := strings.Split(strings.TrimPrefix(path, "/metrics/"), "/")
		if m != method || len(parts)%2 != 0 {
			continue
		}
		got := map[string]string{}
		for i := 0; i < len(parts); i += 2 {
			got[parts[i]] = parts[i+1]
		}
		if got["job"] != pushJob || len(got) != len(grouping)+1 {
			continue
		}
		match := true
		for k, v := range grouping {
			if got[k] != v {
				match = false
			}
		}
		if match {
			return body, true
		}
	}
	return "", false
}

// TestTerminationMessageFits: a result never exceeds the kubelet's 4 KiB.
func TestTerminationMessageFits(t *testing.T) {
	for _, msg := range []string{
		strings.Repeat("é\"x", 3000),
		strings.Repeat("<&>", 2000), // \u003c: six bytes of JSON for one
		strings.Repeat("ü", 2047) + "x",
		"device /dev/xvda: " + strings.Repeat("€", 1500),
	} {
		b, err := terminationMessage(map[string]any{"error": msg})
		var got struct{ Error string }
		if err != nil || len(b) > maxTerminationMessage || json.Unmarshal(b, &got) != nil {
			t.Fatalf("%d bytes, %v", len(b), err)
		}
		if !utf8.ValidString(got.Error) || strings.ContainsRune(got.Error, utf8.RuneError) ||
			!strings.HasSuffix(got.Error, "...") || !strings.HasPrefix(msg, strings.TrimSuffix(got.Error, "...")) {
			t.Errorf("shortened message %q is not a prefix of the error", got.Error)
		}
		if len(b) < maxTerminationMessage-16 {
			t.Errorf("cut to %d bytes, more than needed", len(b))
		}
	}
	stages := mover.StageSeconds{}
	for i := range 400 {
		stages[strings.Repeat("s", 5)+string(rune('a'+i%26))+strings.Repeat("x", i%7)+string(rune('A'+i/26))] = 1
	}
	b, err := terminationMessage(exportJSON{ReportCommon: mover.ReportCommon{Snapshot: strings.Repeat("a", 64), Stages: stages}})
	if err != nil || len(b) > maxTerminationMessage || strings.Contains(string(b), "stages") {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
}

// TestPodSIGTERM: a real mover process in a pod gets SIGTERM in the middle
// of an export, as the kubelet sends it on pod deletion, eviction or
// activeDeadlineSeconds. It stops, exits 1 with one JSON log line and the
// same clear message as its termination message; the repository passes
// check, and a rerun resumes: it stores no more than what no index
// checkpoint covered when the signal came (plus a pack per upload worker).
func TestPodSIGTERM(t *testing.T) {
	const packSize, uploads = 1 << 20, 2
	c, dir := newCLI(t)
	c.env["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
	img := filepath.Join(dir, "vol.img")
	makeImageSeed(t, img, 384<<20, 11)

	// Reference: what an uninterrupted export stores.
	ref := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": filepath.Join(dir, "ref")}}
	ref.ok("init", "--pack-size", "1MiB", "--polynomial", testPolynomial)
	var full exportJSON
	json.Unmarshal([]byte(ref.ok("export", "-q", "--json", "--source", img, "--name", "v", "--connections", "2").stdout), &full)

	c.ok("init", "--pack-size", "1MiB", "--polynomial", testPolynomial)
	term := filepath.Join(dir, "termination-log")
	cmd := c.moverProcess("export", "--source", img, "--name", "v", "--connections", "2", "--termination-log", term)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Signal once the first index checkpoint is written, so that there is
	// something to resume from.
	indexDir := filepath.Join(c.env["MOVER_REPOSITORY"], "index")
	deadline := time.Now().Add(2 * time.Minute)
	indexed := func() bool {
		ents, _ := os.ReadDir(indexDir)
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), backend.TempPrefix) { // written and renamed
				return true
			}
		}
		return false
	}
	for !indexed() {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("no index checkpoint within 2 minutes")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitTerminated {
		t.Fatalf("after SIGTERM: %v (want exit %d); stderr %s", err, exitTerminated, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	last := lines[len(lines)-1]
	var logged struct{ Level, Msg, Error string }
	if err := json.Unmarshal([]byte(last), &logged); err != nil || logged.Level != "ERROR" ||
		!strings.Contains(logged.Error, "interrupted by SIGTERM") || !strings.Contains(logged.Error, "rerun") {
		t.Errorf("last stderr line %q: want the JSON error log of the interruption", last)
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Errorf("stderr line is not JSON: %q", l)
		}
	}
	var msg struct{ Error string }
	b, _ := os.ReadFile(term)
	if err := json.Unmarshal(b, &msg); err != nil || msg.Error != logged.Error {
		t.Errorf("termination message %q, want the logged error %q", b, logged.Error)
	}

	c.ok("check")
	covered := indexedBytes(t, c.env["MOVER_REPOSITORY"])
	var rerun exportJSON
	json.Unmarshal([]byte(c.ok("export", "-q", "--json", "--source", img, "--name", "v", "--connections", "2").stdout), &rerun)
	limit := full.StoredBytes - covered + uploads*(packSize+packSize/8) + 64<<10
	t.Logf("SIGTERM with %d of %d bytes indexed; the rerun stored %d (limit %d)", covered, full.StoredBytes, rerun.StoredBytes, limit)
	if covered == 0 || rerun.StoredBytes > limit {
		t.Errorf("the rerun stored %d bytes, more than the %d no checkpoint covered: it did not resume", rerun.StoredBytes, full.StoredBytes-covered)
	}
	if rerun.Size != full.Size || rerun.Chunks != full.Chunks {
		t.Errorf("rerun %+v, reference %+v", rerun, full)
	}
}

// TestPodInit: init, which a control plane runs as a Job before the first
// export, takes the pod flags and leaves its result in the termination
// message (csi.InitRepository reads it; exit 3 says the repository exists).
func TestPodInit(t *testing.T) {
	c, dir := newCLI(t)
	tl := filepath.Join(dir, "termination-log")
	c.ok("init", "--json", "--log-format=json", "--termination-log="+tl)
	b, err := os.ReadFile(tl)
	if err != nil || !strings.Contains(string(b), `"repository"`) {
		t.Fatalf("termination message %q, %v", b, err)
	}
	r := c.run("init", "--json", "--log-format=json", "--termination-log="+tl)
	b, _ = os.ReadFile(tl)
	if r.code != exitExists || !strings.Contains(string(b), `"exit_code":3`) {
		t.Errorf("second init: exit %d, termination message %q", r.code, b)
	}
}
