package main

// In-pod behaviour of mover export and import: structured logs, the JSON
// result in the container's termination message, Prometheus metrics served
// during the run or pushed at its end, and a clear word on SIGTERM.

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
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/blockmover/blockmover/mover"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// defaultTerminationLog is where the kubelet reads a container's
// termination message from.
const defaultTerminationLog = "/dev/termination-log"

// maxTerminationMessage is the kubelet's limit.
const maxTerminationMessage = 4096

// podState holds the pod-related flags and what they set up for one run.
type podState struct {
	terminationLog string
	metricsAddr    string
	pushgateway    string
	logFormat      string

	log     *slog.Logger
	json    bool // logs are JSON
	metrics *metrics
	op      string
	volume  string
}

// install adds the pod flags to export and import and wraps their runs.
func (p *podState) install(ctx context.Context, g *globalOptions, root *cobra.Command) {
	for _, c := range root.Commands() {
		op := c.Name()
		if op != "export" && op != "import" {
			continue
		}
		f := c.Flags()
		f.StringVar(&p.terminationLog, "termination-log", "", "write the JSON result (or error) here for Kubernetes, at most 4 KiB (default "+defaultTerminationLog+" when it exists)")
		f.StringVar(&p.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. :9090) during the run")
		f.StringVar(&p.pushgateway, "pushgateway", "", "push the final metrics to this Prometheus Pushgateway URL")
		f.StringVar(&p.logFormat, "log-format", "auto", "logs on stderr: text, json, or auto (json when stderr is not a terminal in a Kubernetes pod)")
		run := c.RunE
		c.RunE = func(cmd *cobra.Command, args []string) error {
			return p.run(ctx, g, cmd, op, func() error { return run(cmd, args) })
		}
	}
}

// reportedError is an error already logged as JSON: run() prints no second
// line for it.
type reportedError struct{ err error }

func (e reportedError) Error() string { return e.err.Error() }
func (e reportedError) Unwrap() error { return e.err }

func (p *podState) run(ctx context.Context, g *globalOptions, cmd *cobra.Command, op string, run func() error) error {
	p.op = op
	switch p.logFormat {
	case "json":
		p.json = true
	case "text":
	case "auto", "":
		f, isFile := g.env.stderr.(*os.File)
		p.json = g.env.getenv("KUBERNETES_SERVICE_HOST") != "" && !(isFile && term.IsTerminal(int(f.Fd())))
	default:
		return usagef("--log-format %q: want text, json or auto", p.logFormat)
	}
	if p.json {
		p.log = slog.New(slog.NewJSONHandler(g.env.stderr, nil)).With("op", op)
	} else {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.terminationLog == "" {
		if f, err := os.OpenFile(defaultTerminationLog, os.O_WRONLY, 0); err == nil {
			f.Close()
			p.terminationLog = defaultTerminationLog
		}
	}
	if name, _ := cmd.Flags().GetString("name"); name != "" {
		p.volume = name
	}
	if p.metricsAddr != "" || p.pushgateway != "" {
		p.metrics = newMetrics(op, p.volume)
	}
	if p.metricsAddr != "" {
		stop, err := p.serveMetrics()
		if err != nil {
			return err
		}
		defer stop()
	}
	p.log.Info(op+" starting", "volume", p.volume)
	err := run()
	if err == nil {
		p.push()
		return nil
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	o := classify(ctx, err)
	if o.Code == exitInterrupted || o.Code == exitTerminated {
		msg = "interrupted by SIGTERM or SIGINT: stopped; the repository is consistent and a rerun reuses what was uploaded"
		err = codedError{o, errors.New(msg)}
	}
	isUsage := o.Code == exitUsage
	p.writeResult(map[string]any{"error": msg, "reason": o.Reason, "retryable": o.Retryable, "exit_code": o.Code})
	if p.metrics != nil {
		p.metrics.finish(false)
	}
	p.push()
	if p.json && !isUsage {
		p.log.Error(op+" failed", "error", msg, "reason", o.Reason, "retryable", o.Retryable, "exit_code", o.Code)
		return reportedError{err}
	}
	return err
}

// exported records a finished export: termination message and metrics.
func (p *podState) exported(out exportJSON, res *mover.ExportResult) {
	if p.metrics != nil {
		p.metrics.exported(res)
	}
	p.writeResult(out)
	p.log.Info("export done", "snapshot", out.Snapshot, "size", out.Size, "new_bytes", out.NewBytes, "stored_bytes", out.StoredBytes, "seconds", out.Seconds)
}

// imported records a finished import.
func (p *podState) imported(out importJSON, res *mover.ImportResult) {
	if p.metrics != nil {
		p.metrics.imported(res)
	}
	p.writeResult(out)
	p.log.Info("import done", "snapshot", out.Snapshot, "size", out.Size, "written_bytes", out.WrittenBytes, "seconds", out.Seconds)
}

// writeResult writes v as JSON to the termination log, shortened to fit
// the kubelet's 4 KiB: stages go first, then an error message is cut.
func (p *podState) writeResult(v any) {
	if p.terminationLog == "" {
		return
	}
	b, err := terminationMessage(v)
	if err == nil {
		err = os.WriteFile(p.terminationLog, b, 0o644)
	}
	if err != nil {
		p.log.Warn("writing the termination log", "error", err)
	}
}

// terminationMessage returns v as JSON of at most maxTerminationMessage
// bytes: as it is if it fits, else without "stages", else with "error" cut
// short (at a character boundary, ending in "..."). It fails only when
// even that does not fit.
func terminationMessage(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(b) <= maxTerminationMessage {
		return b, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, "stages")
	if b, err = json.Marshal(m); err != nil || len(b) <= maxTerminationMessage {
		return b, err
	}
	msg, ok := m["error"].(string)
	if !ok {
		return nil, fmt.Errorf("result of %d bytes does not fit the %d-byte termination message", len(b), maxTerminationMessage)
	}
	// The longest prefix of the message, cut at a character boundary, that
	// fits with "..." (binary search: escapes make the JSON longer than the
	// text by a varying amount).
	prefix := func(n int) string {
		for n > 0 && n < len(msg) && !utf8.RuneStart(msg[n]) {
			n--
		}
		return msg[:n] + "..."
	}
	encode := func(n int) []byte {
		m["error"] = prefix(n)
		b, _ := json.Marshal(m) // it marshalled before with a longer string
		return b
	}
	n := sort.Search(len(msg)+1, func(n int) bool { return len(encode(n)) > maxTerminationMessage })
	if n == 0 {
		return nil, fmt.Errorf("result of %d bytes does not fit the %d-byte termination message", len(b), maxTerminationMessage)
	}
	return encode(n - 1), nil
}

// observe wraps a progress callback so that it also updates the metrics.
func (p *podState) observe(op string, fn func(mover.Progress)) func(mover.Progress) {
	if p.metrics == nil {
		return fn
	}
	return func(pr mover.Progress) {
		p.metrics.progress(pr)
		if fn != nil {
			fn(pr)
		}
	}
}

func (p *podState) serveMetrics() (stop func(), err error) {
	ln, err := net.Listen("tcp", p.metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		p.metrics.write(w)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	p.log.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

// push sends the metrics to the Pushgateway (grouping job=blockmover,
// op, volume), replacing the group's earlier push.
func (p *podState) push() {
	if p.pushgateway == "" || p.metrics == nil {
		return
	}
	var buf bytes.Buffer
	p.metrics.write(&buf)
	u := strings.TrimRight(p.pushgateway, "/") + "/metrics/job/blockmover/op/" + url.PathEscape(p.op)
	if p.volume != "" {
		u += "/volume/" + url.PathEscape(p.volume)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, &buf)
	if err != nil {
		p.log.Warn("pushgateway", "error", err)
		return
	}
	req.Header.Set("Content-Type", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			err = fmt.Errorf("%s: %s", u, resp.Status)
		}
	}
	if err != nil {
		p.log.Warn("pushing metrics", "error", err)
	}
}

// metrics are the run's Prometheus metrics, written in the text exposition
// format by hand (a few gauges and counters need no client library).
type metrics struct {
	mu                sync.Mutex
	labels            string // {op="export",volume="..."}
	start             time.Time
	p                 mover.Progress
	chunks, newChunks int64
	stages            mover.Stages
	done              bool
	success           bool
	end               time.Time
}

func newMetrics(op, volume string) *metrics {
	return &metrics{labels: fmt.Sprintf(`op="%s",volume="%s"`, escapeLabel(op), escapeLabel(volume)), start: time.Now()}
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func (m *metrics) progress(p mover.Progress) {
	m.mu.Lock()
	m.p = p
	m.mu.Unlock()
}

func (m *metrics) exported(r *mover.ExportResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.p = mover.Progress{Size: r.Size, DoneBytes: r.Size, ReadBytes: r.ReadBytes, ZeroBytes: r.ZeroBytes, NewBytes: r.NewBytes, StoredBytes: r.StoredBytes}
	m.chunks, m.newChunks, m.stages = r.Chunks, r.NewChunks, r.Stages
	m.done, m.success, m.end = true, true, time.Now()
}

func (m *metrics) imported(r *mover.ImportResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.p = mover.Progress{Size: r.Size, DoneBytes: r.Size, WrittenBytes: r.WrittenBytes, ZeroBytes: r.ZeroedBytes}
	m.chunks, m.stages = r.Chunks, r.Stages
	m.done, m.success, m.end = true, true, time.Now()
}

func (m *metrics) finish(success bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.done {
		m.done, m.success, m.end = true, success, time.Now()
	}
}

// write writes the metrics in the Prometheus text format (version 0.0.4).
func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	metric := func(name, typ, help string, v float64, extra ...string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		fmt.Fprintf(w, "%s{%s} %g\n", name, m.labels, v)
	}
	metric("mover_volume_size_bytes", "gauge", "Size of the volume being moved.", float64(m.p.Size))
	metric("mover_processed_bytes_total", "counter", "Volume bytes fully processed.", float64(m.p.DoneBytes))
	metric("mover_read_bytes_total", "counter", "Bytes read from the source device (export).", float64(m.p.ReadBytes))
	metric("mover_zero_bytes_total", "counter", "Bytes found zero (export) or zeroed (import).", float64(m.p.ZeroBytes))
	metric("mover_new_bytes_total", "counter", "Plaintext bytes the repository did not hold (export).", float64(m.p.NewBytes))
	metric("mover_stored_bytes_total", "counter", "Bytes written to the repository backend (export).", float64(m.p.StoredBytes))
	metric("mover_written_bytes_total", "counter", "Bytes written to the target device (import).", float64(m.p.WrittenBytes))
	metric("mover_chunks_total", "counter", "Chunks in the snapshot (known at the end).", float64(m.chunks))
	metric("mover_new_chunks_total", "counter", "Chunks the repository did not hold (export; known at the end).", float64(m.newChunks))
	stages := map[string]time.Duration{}
	m.stages.Each(func(k string, d time.Duration) { stages[k] = d })
	names := make([]string, 0, len(stages))
	for k, d := range stages {
		if d > 0 {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	fmt.Fprintf(w, "# HELP mover_stage_seconds_total Time spent in each pipeline stage, summed over workers (known at the end).\n# TYPE mover_stage_seconds_total counter\n")
	for _, k := range names {
		fmt.Fprintf(w, "mover_stage_seconds_total{%s,stage=\"%s\"} %g\n", m.labels, k, stages[k].Seconds())
	}
	end := time.Now()
	if m.done {
		end = m.end
	}
	metric("mover_duration_seconds", "gauge", "Wall time of the run so far.", end.Sub(m.start).Seconds())
	metric("mover_start_time_seconds", "gauge", "Unix time the run started.", float64(m.start.UnixNano())/1e9)
	var done, ok float64
	if m.done {
		done = 1
		if m.success {
			ok = 1
		}
	}
	metric("mover_finished", "gauge", "1 once the run has ended.", done)
	metric("mover_success", "gauge", "1 if the run ended successfully.", ok)
}
