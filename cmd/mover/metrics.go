package main

// Prometheus metrics of one command run, with prometheus/client_golang:
// served on --metrics-addr during the run, pushed to --pushgateway at its
// end. docs/kubernetes.md lists them.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/prometheus/common/expfmt"
)

// pushJob is the Pushgateway job every push is grouped under.
const pushJob = "blockmover"

// numStorageOps is the number of backend operations (backend.Op values).
const numStorageOps = int(backend.OpDelete) + 1

// runMetrics holds one run's metrics. Its methods are safe for concurrent
// use: progress, storage requests and the scrape handler arrive from
// different goroutines.
//
// Two registries gather them. served has the Go and process collectors,
// mover_build_info and the run's mover_* metrics labelled op and volume;
// pushed has mover_build_info and the mover_* metrics without op and
// volume, which the Pushgateway's grouping key (job, op, volume) adds, as
// it requires: a pushed metric must not carry a grouping label.
type runMetrics struct {
	served, pushed *prometheus.Registry

	mu          sync.Mutex
	op, volume  string
	start       time.Time
	sizeKnown   bool // the volume's size is known: mover_volume_size_bytes is exported
	p           mover.Progress
	transfer    bool // export or import: the byte counters are exported
	chunks      int64
	newChunks   int64
	stages      mover.Stages
	done        bool
	success     bool
	end         time.Time
	results     []finalValue // final values of gc, check and forget
	storage     [numStorageOps]storageCounts
	lastSuccess time.Time // zero until the run succeeds
}

// storageCounts are the counters of one backend operation.
type storageCounts struct {
	requests, errors, retries int64
	seconds                   float64
}

// finalValue is one final value of a run: a metric without further labels.
type finalValue struct {
	name, help string
	typ        prometheus.ValueType
	value      float64
}

// newRunMetrics returns the metrics of a run of op on volume ("" if the
// command has none) starting now.
func newRunMetrics(op, volume string) *runMetrics {
	m := &runMetrics{op: op, volume: volume, start: time.Now(), transfer: op == "export" || op == "import",
		served: prometheus.NewRegistry(), pushed: prometheus.NewRegistry()}
	v := buildVersion()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "mover_build_info",
		Help:        "Always 1: the version, commit and Go version of this mover.",
		ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "goversion": v.Go},
	})
	info.Set(1)
	m.served.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info, runCollector{m, true})
	m.pushed.MustRegister(info, runCollector{m, false})
	return m
}

// setVolume names the volume once it is known (import: the snapshot's).
func (m *runMetrics) setVolume(volume string) {
	m.mu.Lock()
	m.volume = volume
	m.mu.Unlock()
}

// setSize records the volume's size as soon as it is known, before the
// first progress report.
func (m *runMetrics) setSize(size int64) {
	m.mu.Lock()
	m.p.Size, m.sizeKnown = size, true
	m.mu.Unlock()
}

func (m *runMetrics) progress(p mover.Progress) {
	m.mu.Lock()
	m.p, m.sizeKnown = p, true
	m.mu.Unlock()
}

func (m *runMetrics) exported(r *mover.ExportResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.p = mover.Progress{Size: r.Size, DoneBytes: r.Size, ReadBytes: r.ReadBytes, ZeroBytes: r.ZeroBytes, NewBytes: r.NewBytes, StoredBytes: r.StoredBytes}
	m.sizeKnown = true
	m.chunks, m.newChunks, m.stages = r.Chunks, r.NewChunks, r.Stages
}

func (m *runMetrics) imported(r *mover.ImportResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.p = mover.Progress{Size: r.Size, DoneBytes: r.Size, WrittenBytes: r.WrittenBytes, FetchedBytes: r.FetchedBytes, ZeroBytes: r.ZeroedBytes}
	m.sizeKnown = true
	m.chunks, m.stages = r.Chunks, r.Stages
}

// setResults records the final values of a gc, check or forget.
func (m *runMetrics) setResults(rs ...finalValue) {
	m.mu.Lock()
	m.results = rs
	m.mu.Unlock()
}

func gauge(name, help string, v float64) finalValue {
	return finalValue{name, help, prometheus.GaugeValue, v}
}

func counter(name, help string, v float64) finalValue {
	return finalValue{name, help, prometheus.CounterValue, v}
}

func gcResults(r *repo.GCResult) []finalValue {
	return []finalValue{
		gauge("mover_gc_snapshots", "Snapshots in the repository.", float64(r.Snapshots)),
		gauge("mover_gc_live_blobs", "Blobs some snapshot needs.", float64(r.LiveBlobs)),
		gauge("mover_gc_live_bytes", "Stored bytes of the live blobs.", float64(r.LiveBytes)),
		gauge("mover_gc_packs", "Packs in the repository when this gc started.", float64(r.Packs)),
		counter("mover_gc_deleted_packs_total", "Packs this gc deleted.", float64(r.Deleted)),
		counter("mover_gc_deleted_bytes_total", "Bytes of the packs this gc deleted.", float64(r.DeletedBytes)),
		counter("mover_gc_repacked_packs_total", "Packs whose live blobs this gc copied.", float64(r.Repacked)),
		counter("mover_gc_repacked_bytes_total", "Live bytes this gc copied.", float64(r.RepackedBytes)),
		gauge("mover_gc_waiting_packs", "Condemned packs still in their grace period.", float64(r.Waiting)),
		gauge("mover_gc_young_packs", "Packs younger than the grace period, kept whole.", float64(r.Young)),
		gauge("mover_gc_missing_packs", "Packs the index named that do not exist.", float64(r.MissingPacks)),
	}
}

func checkResults(r *repo.CheckResult) []finalValue {
	errs := len(r.Errors())
	return []finalValue{
		gauge("mover_check_packs", "Packs checked.", float64(r.Packs)),
		gauge("mover_check_blobs", "Blobs checked.", float64(r.Blobs)),
		gauge("mover_check_snapshots", "Snapshots checked.", float64(r.Snapshots)),
		counter("mover_check_read_bytes_total", "Bytes downloaded and verified (--read-data).", float64(r.ReadBytes)),
		gauge("mover_check_errors", "Errors the check found.", float64(errs)),
		gauge("mover_check_warnings", "Warnings the check found.", float64(len(r.Problems)-errs)),
	}
}

func forgetResults(out forgetJSON) []finalValue {
	return []finalValue{
		counter("mover_forget_removed_snapshots_total", "Snapshots forgotten (or, with --dry-run, that would be).", float64(len(out.Removed))),
		gauge("mover_forget_kept_snapshots", "Snapshots the retention policy keeps.", float64(len(out.Kept))),
	}
}

// finish records the end of the run, and the time of a success.
func (m *runMetrics) finish(success bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return
	}
	m.done, m.success, m.end = true, success, time.Now()
	if success {
		m.lastSuccess = m.end
	}
}

// request counts a finished storage request (backend.NewObserve). An error
// that is an answer (not found, already exists) or a cancellation is no
// error here.
func (m *runMetrics) request(e backend.RequestEvent) {
	failed := e.Err != nil && !errors.Is(e.Err, backend.ErrNotFound) && !errors.Is(e.Err, backend.ErrExists) &&
		!errors.Is(e.Err, context.Canceled)
	m.mu.Lock()
	defer m.mu.Unlock()
	if int(e.Op) >= numStorageOps {
		return
	}
	c := &m.storage[e.Op]
	c.requests++
	c.seconds += e.Duration.Seconds()
	if failed {
		c.errors++
	}
}

// retry counts a retried storage request.
func (m *runMetrics) retry(e backend.RetryEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if int(e.Op) < numStorageOps {
		m.storage[e.Op].retries++
	}
}

// runCollector exports a runMetrics' mover_* metrics, with the labels op
// and volume when labelled is set. It is an unchecked collector: it
// describes nothing up front, since which metrics exist depends on the
// command and on what is known yet.
type runCollector struct {
	m        *runMetrics
	labelled bool
}

func (c runCollector) Describe(chan<- *prometheus.Desc) {}

func (c runCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	var values []string
	if c.labelled {
		names, values = []string{"op", "volume"}, []string{m.op, m.volume}
	}
	emit := func(name, help string, typ prometheus.ValueType, v float64, label ...string) {
		ln, lv := names, values
		if len(label) == 2 {
			ln, lv = append(append([]string(nil), names...), label[0]), append(append([]string(nil), values...), label[1])
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help, ln, nil), typ, v, lv...)
	}
	if m.sizeKnown {
		emit("mover_volume_size_bytes", "Size of the volume being moved (absent until known).", prometheus.GaugeValue, float64(m.p.Size))
	}
	if m.transfer {
		emit("mover_processed_bytes_total", "Volume bytes fully processed.", prometheus.CounterValue, float64(m.p.DoneBytes))
		emit("mover_read_bytes_total", "Bytes read from the source device (export).", prometheus.CounterValue, float64(m.p.ReadBytes))
		emit("mover_zero_bytes_total", "Bytes found zero (export) or zeroed (import).", prometheus.CounterValue, float64(m.p.ZeroBytes))
		emit("mover_new_bytes_total", "Plaintext bytes the repository did not hold (export).", prometheus.CounterValue, float64(m.p.NewBytes))
		emit("mover_stored_bytes_total", "Bytes written to the repository backend (export).", prometheus.CounterValue, float64(m.p.StoredBytes))
		emit("mover_written_bytes_total", "Bytes written to the target device (import).", prometheus.CounterValue, float64(m.p.WrittenBytes))
		emit("mover_fetched_bytes_total", "Bytes downloaded from the repository (import).", prometheus.CounterValue, float64(m.p.FetchedBytes))
		emit("mover_chunks_total", "Chunks in the snapshot (known at the end).", prometheus.CounterValue, float64(m.chunks))
		emit("mover_new_chunks_total", "Chunks the repository did not hold (export; known at the end).", prometheus.CounterValue, float64(m.newChunks))
		stages := map[string]time.Duration{}
		m.stages.Each(func(k string, d time.Duration) {
			if d > 0 {
				stages[k] = d
			}
		})
		keys := make([]string, 0, len(stages))
		for k := range stages {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			emit("mover_stage_seconds_total", "Time spent in each pipeline stage, summed over workers (known at the end).",
				prometheus.CounterValue, stages[k].Seconds(), "stage", k)
		}
	}
	for _, r := range m.results {
		emit(r.name, r.help, r.typ, r.value)
	}
	for op := range backend.Op(numStorageOps) {
		s := m.storage[op]
		name := op.String()
		emit("mover_storage_requests_total", "Requests to the repository's storage, each attempt counted.", prometheus.CounterValue, float64(s.requests), "operation", name)
		emit("mover_storage_errors_total", "Failed storage requests (not counting not-found, already-exists and cancelled).", prometheus.CounterValue, float64(s.errors), "operation", name)
		emit("mover_storage_retries_total", "Storage requests retried after a transient error.", prometheus.CounterValue, float64(s.retries), "operation", name)
		emit("mover_storage_request_seconds_total", "Time spent in storage requests (a get until its body is closed).", prometheus.CounterValue, s.seconds, "operation", name)
	}
	end := time.Now()
	if m.done {
		end = m.end
	}
	emit("mover_duration_seconds", "Wall time of the run so far.", prometheus.GaugeValue, end.Sub(m.start).Seconds())
	emit("mover_start_time_seconds", "Unix time the run started.", prometheus.GaugeValue, float64(m.start.UnixNano())/1e9)
	var done, ok float64
	if m.done {
		done = 1
		if m.success {
			ok = 1
		}
	}
	emit("mover_finished", "1 once the run has ended.", prometheus.GaugeValue, done)
	emit("mover_success", "1 if the run ended successfully.", prometheus.GaugeValue, ok)
	if !m.lastSuccess.IsZero() {
		emit("mover_last_success_timestamp_seconds", "Unix time this op last succeeded on this volume (absent after a failure; a failed run's push keeps the earlier value).",
			prometheus.GaugeValue, float64(m.lastSuccess.UnixNano())/1e9)
	}
}

// handler serves the served registry in the format the scraper asks for
// (the text format by default).
func (m *runMetrics) handler() http.Handler {
	return promhttp.HandlerFor(m.served, promhttp.HandlerOpts{})
}

// push sends the pushed registry in the text format to the Pushgateway at
// url, grouped by job=blockmover, op and (if set) volume. A success
// replaces the group (PUT); a failure only replaces the metrics it has
// (POST), so that mover_last_success_timestamp_seconds of the last success
// stays for alerts on its age.
func (m *runMetrics) push(ctx context.Context, url string, client *http.Client) error {
	m.mu.Lock()
	op, volume, success := m.op, m.volume, m.success
	m.mu.Unlock()
	p := push.New(url, pushJob).Gatherer(m.pushed).Grouping("op", op).
		Format(expfmt.NewFormat(expfmt.TypeTextPlain)).Client(client)
	if volume != "" {
		p = p.Grouping("volume", volume)
	}
	var err error
	if success {
		err = p.PushContext(ctx)
	} else {
		err = p.AddContext(ctx)
	}
	if err != nil {
		return fmt.Errorf("pushing metrics: %w", err)
	}
	return nil
}
