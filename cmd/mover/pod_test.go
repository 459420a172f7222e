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
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo/backend"
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
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("stderr line is not JSON: %q", l)
		}
	}
	if !strings.Contains(r.stderr, `"msg":"export done"`) {
		t.Errorf("no structured 'export done' log: %s", r.stderr)
	}
	msg, err := os.ReadFile(term)
	if err != nil {
		t.Fatal(err)
	}
	var res exportJSON
	if err := json.Unmarshal(msg, &res); err != nil || res.Snapshot == "" || res.Size != 16<<20 || len(msg) > maxTerminationMessage {
		t.Fatalf("termination message %q: %v", msg, err)
	}
	body := pushed["PUT /metrics/job/blockmover/op/export/volume/pvc-1"]
	checkExposition(t, body)
	for _, want := range []string{`mover_processed_bytes_total{op="export",volume="pvc-1"} 1.6777216e+07`, `mover_success{op="export",volume="pvc-1"} 1`, `mover_stage_seconds_total{op="export",volume="pvc-1",stage="hash"}`} {
		if !strings.Contains(body, want) {
			t.Errorf("pushed metrics lack %q:\n%s", want, body)
		}
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
// while the run goes on.
func TestMetricsServed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &podState{metricsAddr: addr, op: "export"}
	p.log = slog.New(slog.DiscardHandler)
	p.metrics = newMetrics("export", `we"ird`)
	stop, err := p.serveMetrics()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	p.observe("export", nil)(mover.Progress{Size: 100, DoneBytes: 40, ReadBytes: 40, NewBytes: 10})
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	checkExposition(t, string(b))
	for _, want := range []string{`mover_processed_bytes_total{op="export",volume="we\"ird"} 40`, `mover_finished{op="export",volume="we\"ird"} 0`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q:\n%s", want, b)
		}
	}
}

// checkExposition checks the Prometheus text format line by line: HELP and
// TYPE before each family, samples of declared families, valid names.
func checkExposition(t *testing.T, s string) {
	t.Helper()
	if s == "" {
		t.Fatal("no metrics")
	}
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)\} (\S+)$`)
	typed := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "# HELP "):
		case strings.HasPrefix(l, "# TYPE "):
			f := strings.Fields(l)
			if len(f) != 4 || (f[3] != "counter" && f[3] != "gauge") {
				t.Errorf("bad TYPE line %q", l)
			}
			typed[f[2]] = true
		default:
			m := sample.FindStringSubmatch(l)
			if m == nil {
				t.Errorf("bad sample line %q", l)
				continue
			}
			if !typed[m[1]] {
				t.Errorf("sample of undeclared family %q", l)
			}
		}
	}
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
