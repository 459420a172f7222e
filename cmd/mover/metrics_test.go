package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	dto "github.com/prometheus/client_model/go"
)

// pushRecorder is a fake Pushgateway: it keeps the last body pushed per
// "METHOD PATH".
type pushRecorder struct {
	mu     sync.Mutex
	bodies map[string]string
	srv    *httptest.Server
}

func newPushRecorder(t *testing.T) *pushRecorder {
	r := &pushRecorder{bodies: map[string]string{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies[req.Method+" "+req.URL.Path] = string(b)
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// group returns the families pushed with method to the group, failing the
// test if there was no such push.
func (r *pushRecorder) group(t *testing.T, method string, grouping map[string]string) map[string]*dto.MetricFamily {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	body, ok := pushedGroup(r.bodies, method, grouping)
	if !ok {
		t.Fatalf("no %s to the group %v; pushes: %v", method, grouping, keys(r.bodies))
	}
	return checkExposition(t, body)
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestMaintenanceMetrics: gc, check and forget push their results, and a
// success pushes mover_last_success_timestamp_seconds (PUT, replacing the
// group); a failed run adds its metrics with POST, so the last success's
// timestamp stays at the Pushgateway, and pushes none of its own.
func TestMaintenanceMetrics(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 8<<20)
	c.ok("init")
	c.ok("export", "-q", "--source", img, "--name", "v")
	c.ok("export", "-q", "--source", img, "--name", "v")
	gw := newPushRecorder(t)

	c.ok("forget", "--keep-last", "1", "--name", "v", "--pushgateway", gw.srv.URL)
	fams := gw.group(t, "PUT", map[string]string{"op": "forget", "volume": "v"})
	for name, want := range map[string]float64{"mover_forget_removed_snapshots_total": 1, "mover_forget_kept_snapshots": 1, "mover_success": 1} {
		if got, ok := sampleValue(fams, name, nil); !ok || got != want {
			t.Errorf("forget: %s = %v (found %v), want %v", name, got, ok, want)
		}
	}
	c.ok("gc", "-q", "--grace", "0", "--pushgateway", gw.srv.URL)
	fams = gw.group(t, "PUT", map[string]string{"op": "gc"})
	for name, want := range map[string]float64{"mover_gc_snapshots": 1, "mover_success": 1} {
		if got, ok := sampleValue(fams, name, nil); !ok || got != want {
			t.Errorf("gc: %s = %v (found %v), want %v", name, got, ok, want)
		}
	}
	for _, name := range []string{"mover_gc_deleted_packs_total", "mover_gc_live_bytes", "mover_last_success_timestamp_seconds", "mover_build_info"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("gc pushed no %s", name)
		}
	}
	if n, ok := sampleValue(fams, "mover_storage_requests_total", map[string]string{"operation": "list"}); !ok || n == 0 {
		t.Errorf("gc: mover_storage_requests_total{operation=\"list\"} = %v (found %v)", n, ok)
	}
	c.ok("check", "--read-data", "--pushgateway", gw.srv.URL)
	fams = gw.group(t, "PUT", map[string]string{"op": "check"})
	if got, ok := sampleValue(fams, "mover_check_errors", nil); !ok || got != 0 {
		t.Errorf("check: mover_check_errors = %v (found %v)", got, ok)
	}
	if got, ok := sampleValue(fams, "mover_check_read_bytes_total", nil); !ok || got == 0 {
		t.Errorf("check --read-data: mover_check_read_bytes_total = %v (found %v)", got, ok)
	}

	// A failure: POST, mover_success 0, no timestamp of its own.
	out := filepath.Join(dir, "out.img")
	c.fails(exitNotFound, "nosuch", "import", "--snapshot", "nosuch", "--target", out, "--pushgateway", gw.srv.URL)
	fams = gw.group(t, "POST", map[string]string{"op": "import"})
	for name, want := range map[string]float64{"mover_success": 0, "mover_finished": 1} {
		if got, ok := sampleValue(fams, name, nil); !ok || got != want {
			t.Errorf("failed import: %s = %v (found %v), want %v", name, got, ok, want)
		}
	}
	if _, ok := fams["mover_last_success_timestamp_seconds"]; ok {
		t.Error("a failed run pushed mover_last_success_timestamp_seconds")
	}
}

// TestS3RetriesLoggedAndCounted: an S3 store that answers every third PUT
// with 503 SlowDown. The export succeeds; every retry is a JSON log record
// with the operation, key, attempt and error, and the pushed metrics count
// the requests, errors and retries per operation.
func TestS3RetriesLoggedAndCounted(t *testing.T) {
	srv := s3test.Start(t, false)
	bucket := srv.NewBucket(t, false)
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // the client signed the request for this host
	}}
	var puts, refused atomic.Int64
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && puts.Add(1)%3 == 0 {
			refused.Add(1)
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer flaky.Close()

	dir := t.TempDir()
	c := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": "s3://" + bucket + "/r"}}
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 16<<20)
	c.ok("init", "--pack-size", "2MiB", "--s3-endpoint", srv.Endpoint, "--s3-path-style")
	gw := newPushRecorder(t)
	r := c.ok("export", "-q", "--source", img, "--name", "v", "--s3-endpoint", flaky.URL, "--s3-path-style",
		"--log-format", "json", "--pushgateway", gw.srv.URL)
	if refused.Load() == 0 {
		t.Fatal("the proxy refused no PUT")
	}
	var logged int64
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		var rec struct {
			Level, Msg, Op, Operation, Key, Error string
			Attempt                               int
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Errorf("stderr line is not JSON: %q", l)
			continue
		}
		if rec.Msg != "storage request failed, retrying" {
			continue
		}
		logged++
		if rec.Level != "WARN" || rec.Op != "export" || rec.Operation != "put" || rec.Key == "" || rec.Attempt < 1 || !strings.Contains(rec.Error, "SlowDown") {
			t.Errorf("retry record %s", l)
		}
	}
	if logged != refused.Load() {
		t.Errorf("%d retry records for %d refused PUTs:\n%s", logged, refused.Load(), r.stderr)
	}
	fams := gw.group(t, "PUT", map[string]string{"op": "export", "volume": "v"})
	put := map[string]string{"operation": "put"}
	for name, want := range map[string]float64{
		"mover_storage_retries_total":  float64(refused.Load()),
		"mover_storage_errors_total":   float64(refused.Load()),
		"mover_storage_requests_total": float64(puts.Load()),
	} {
		if got, ok := sampleValue(fams, name, put); !ok || got != want {
			t.Errorf("%s{operation=\"put\"} = %v (found %v), want %v", name, got, ok, want)
		}
	}
	if got, ok := sampleValue(fams, "mover_storage_retries_total", map[string]string{"operation": "get"}); !ok || got != 0 {
		t.Errorf("mover_storage_retries_total{operation=\"get\"} = %v (found %v), want 0", got, ok)
	}
}
