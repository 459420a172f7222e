package velero

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
)

// TestScrape reads progress from metrics in the mover's exposition
// (cmd/mover/metrics.go), and knows none until both figures are there.
func TestScrape(t *testing.T) {
	body := "# HELP mover_volume_size_bytes Size of the volume being moved (absent until known).\n" +
		"# TYPE mover_volume_size_bytes gauge\nmover_volume_size_bytes{op=\"export\"} 1.6777216e+07\n" +
		"# TYPE mover_processed_bytes_total counter\nmover_processed_bytes_total{op=\"export\"} 4.194304e+06\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(body))
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p32, _ := strconv.Atoi(port)
	p, err := scrape(context.Background(), srv.Client(), host, int32(p32))
	if err != nil || !p.known || p.total != 16<<20 || p.done != 4<<20 {
		t.Fatalf("scrape: %+v %v", p, err)
	}
	body = "# TYPE mover_build_info gauge\nmover_build_info 1\n"
	if p, err := scrape(context.Background(), srv.Client(), host, int32(p32)); err != nil || p.known {
		t.Errorf("before the size is known: %+v %v", p, err)
	}
}

// TestApplyProgress: Prepared becomes InProgress with a start time and
// node when the pod runs; progress is copied when known; nothing changes
// in other phases.
func TestApplyProgress(t *testing.T) {
	var st velerov2.DataUploadStatus
	st.Phase = velerov2.DataUploadPhasePrepared
	apply := func(node string, p progress) bool {
		return applyProgress(&st.Phase, &st.StartTimestamp, &st.Node, &st.Progress.TotalBytes, &st.Progress.BytesDone,
			velerov2.DataUploadPhasePrepared, velerov2.DataUploadPhaseInProgress, node, p)
	}
	if !apply("node-1", progress{}) || st.Phase != velerov2.DataUploadPhaseInProgress || st.StartTimestamp == nil || st.Node != "node-1" {
		t.Fatalf("status %+v", st)
	}
	if apply("node-1", progress{}) {
		t.Errorf("a look with nothing new changed the status")
	}
	if !apply("node-1", progress{total: 100, done: 40, known: true}) || st.Progress.TotalBytes != 100 || st.Progress.BytesDone != 40 {
		t.Errorf("progress %+v", st.Progress)
	}
	st.Phase = velerov2.DataUploadPhaseCanceling
	if apply("node-2", progress{total: 100, done: 90, known: true}) || st.Node != "node-1" {
		t.Errorf("a canceling upload took progress: %+v", st)
	}
}
