package main

// In-pod behaviour of mover export, import, gc, check and forget:
// structured logs, the JSON result in the container's termination message,
// Prometheus metrics (metrics.go) served during the run or pushed at its
// end, and a clear word on SIGTERM.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
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

	env        *environment
	log        *slog.Logger // nil outside the commands run wraps
	json       bool         // logs are JSON
	structured bool         // log records of every level go to stderr (json, or text asked for)
	console    *console     // stderr when it is a terminal
	metrics    *runMetrics  // nil without --metrics-addr and --pushgateway
	op         string
	volume     string
}

// attach gives c, the command of op, the pod flags (termination log,
// metrics, log format) and runs it through p.run. Each command that a
// control plane runs as a Job (export, import, gc, check, forget, init)
// calls it
// where it is built. c's errors get the CLI's advice (hints.go) before the
// termination message is written.
func (p *podState) attach(ctx context.Context, g *globalOptions, c *cobra.Command) {
	p.env = g.env
	op := c.Name()
	f := c.Flags()
	f.StringVar(&p.terminationLog, "termination-log", "", "write the JSON result (or error) here for Kubernetes, at most 4 KiB (default "+defaultTerminationLog+" when it exists)")
	f.StringVar(&p.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. :9090) during the run")
	f.StringVar(&p.pushgateway, "pushgateway", "", "push the final metrics to this Prometheus Pushgateway URL")
	f.StringVar(&p.logFormat, "log-format", "auto", "logs on stderr: text, json, or auto (json in a Kubernetes pod when stderr is not a terminal, else warnings only, as text)")
	run := c.RunE
	c.RunE = func(cmd *cobra.Command, args []string) error {
		return p.run(ctx, g, cmd, op, func() error { return withHint(run(cmd, args)) })
	}
}

// reportedError is an error already logged as JSON: run() prints no second
// line for it.
type reportedError struct{ err error }

func (e reportedError) Error() string { return e.err.Error() }
func (e reportedError) Unwrap() error { return e.err }

// run runs one pod command: it sets up the logs (--log-format), the
// metrics (served at once, pushed at the end) and the termination log,
// calls run, and reports its error, if any, in all three. An error logged
// as JSON comes back as a reportedError, which main does not print again.
func (p *podState) run(ctx context.Context, g *globalOptions, cmd *cobra.Command, op string, run func() error) error {
	p.op = op
	f, isFile := g.env.stderr.(*os.File)
	tty := isFile && term.IsTerminal(int(f.Fd()))
	switch p.logFormat {
	case "json":
		p.json = true
	case "text":
		p.structured = true
	case "auto", "":
		p.json = g.env.getenv("KUBERNETES_SERVICE_HOST") != "" && !tty
	default:
		return usagef("--log-format %q: want text, json or auto", p.logFormat)
	}
	var stderr io.Writer = g.env.stderr
	if tty {
		p.console = newConsole(f)
		stderr = p.console
		defer p.console.endStatus()
	}
	switch {
	case p.json:
		p.structured = true
		p.log = slog.New(slog.NewJSONHandler(stderr, nil)).With("op", op)
	case p.structured:
		p.log = slog.New(slog.NewTextHandler(stderr, nil)).With("op", op)
	default:
		p.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("op", op)
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
		p.metrics = newRunMetrics(op, p.volume)
	}
	if p.metricsAddr != "" {
		stop, err := p.serveMetrics()
		if err != nil {
			return err
		}
		defer stop()
	}
	if p.volume != "" {
		p.log.Info(op+" starting", "volume", p.volume)
	} else {
		p.log.Info(op + " starting")
	}
	err := run()
	if err == nil {
		if p.metrics != nil {
			p.metrics.finish(true)
		}
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

// structuredLog returns the run's logger when its records of every level
// go to stderr (--log-format json or text, or a pod), else nil.
func (p *podState) structuredLog() *slog.Logger {
	if !p.structured {
		return nil
	}
	return p.log
}

// logger returns the run's logger; outside the commands run wraps, one
// that writes warnings as text to stderr. It is safe for concurrent use
// once run has begun (it never sets p.log).
func (p *podState) logger() *slog.Logger {
	if p.log == nil {
		return slog.New(slog.NewTextHandler(p.env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return p.log
}

// retried logs a storage request that failed and is retried, and counts
// it (the backend's RetryOptions.OnRetry).
func (p *podState) retried(e backend.RetryEvent) {
	if p.metrics != nil {
		p.metrics.retry(e)
	}
	p.logger().Warn("storage request failed, retrying", "operation", e.Op.String(), "key", e.Key,
		"attempt", e.Attempt, "delay", e.Delay.String(), "error", e.Err.Error())
}

// requestObserver returns the callback that counts storage requests, nil
// when the run has no metrics.
func (p *podState) requestObserver() func(backend.RequestEvent) {
	if p.metrics == nil {
		return nil
	}
	return p.metrics.request
}

// volumeKnown records the volume and its size once the command knows them
// (import: from the snapshot), so that mover_volume_size_bytes is right
// from the start.
func (p *podState) volumeKnown(volume string, size int64) {
	if p.volume == "" {
		p.volume = volume
	}
	if p.metrics != nil {
		p.metrics.setVolume(p.volume)
		p.metrics.setSize(size)
	}
}

// exported records a finished export: termination message and metrics.
func (p *podState) exported(out exportJSON, res *mover.ExportResult) {
	if p.metrics != nil {
		p.metrics.exported(res)
	}
	p.writeResult(out)
	p.logger().Info("export done", "snapshot", out.Snapshot, "size", out.Size, "new_bytes", out.NewBytes, "stored_bytes", out.StoredBytes, "seconds", out.Seconds)
}

// imported records a finished import.
func (p *podState) imported(out importJSON, res *mover.ImportResult) {
	if p.metrics != nil {
		p.metrics.imported(res)
	}
	p.writeResult(out)
	p.logger().Info("import done", "snapshot", out.Snapshot, "size", out.Size, "written_bytes", out.WrittenBytes, "seconds", out.Seconds)
}

// collected records a finished gc.
func (p *podState) collected(res *repo.GCResult) {
	if p.metrics != nil {
		p.metrics.setResults(gcResults(res)...)
	}
	p.writeResult(res)
	p.logger().Info("gc done", "snapshots", res.Snapshots, "deleted_packs", res.Deleted, "deleted_bytes", res.DeletedBytes,
		"repacked_packs", res.Repacked, "waiting_packs", res.Waiting)
}

// checked records a finished check, whether or not it found errors (the
// error then follows as the run's result).
func (p *podState) checked(res *repo.CheckResult) {
	if p.metrics != nil {
		p.metrics.setResults(checkResults(res)...)
	}
	errs := len(res.Errors())
	if errs == 0 {
		p.writeResult(res)
	}
	p.logger().Info("check done", "packs", res.Packs, "blobs", res.Blobs, "snapshots", res.Snapshots,
		"errors", errs, "warnings", len(res.Problems)-errs)
}

// initialised records a repository created by init (a control plane runs
// init as a Job, and reads "already exists" from exit code 3).
func (p *podState) initialised(out map[string]any) {
	p.writeResult(out)
	p.logger().Info("init done", "repository", out["repository"], "id", out["id"])
}

// forgot records a finished forget.
func (p *podState) forgot(out forgetJSON) {
	if p.metrics != nil {
		p.metrics.setResults(forgetResults(out)...)
	}
	p.writeResult(out)
	p.logger().Info("forget done", "removed", len(out.Removed), "kept", len(out.Kept), "dry_run", out.DryRun)
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

// serveMetrics serves the run's metrics on /metrics at --metrics-addr
// until stop is called.
func (p *podState) serveMetrics() (stop func(), err error) {
	ln, err := net.Listen("tcp", p.metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", p.metrics.handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	p.logger().Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

// push sends the metrics to the Pushgateway, if one is given (see
// runMetrics.push); a failure is logged, not returned.
func (p *podState) push() {
	if p.pushgateway == "" || p.metrics == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.metrics.push(ctx, p.pushgateway, &http.Client{}); err != nil {
		p.logger().Warn("pushgateway", "error", err.Error())
	}
}
