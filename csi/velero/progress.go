package velero

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/blockmover/blockmover/csi"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// progress is what a mover pod's metrics say of its copy.
type progress struct {
	total, done int64 // mover_volume_size_bytes, mover_processed_bytes_total
	known       bool
}

// watchProgress calls report every Config.ProgressEvery with the node and
// progress of op's running mover pod, read from the pod's metrics
// endpoint, until the returned stop is called. A pod not running yet, or
// whose metrics cannot be read, is skipped until the next look.
func (c *Controller) watchProgress(ctx context.Context, op string, report func(node string, p progress)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	hc := &http.Client{Timeout: 3 * time.Second}
	go func() {
		defer close(done)
		t := time.NewTicker(c.cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			pod, err := c.runningPod(ctx, op)
			if err != nil || pod == nil {
				continue
			}
			p, err := scrape(ctx, hc, pod.Status.PodIP, c.cfg.MetricsPort)
			if err != nil {
				c.cfg.Log.Debug("progress", "pod", pod.Name, "error", err)
			}
			report(pod.Spec.NodeName, p)
		}
	}()
	return func() { cancel(); <-done }
}

// runningPod returns the running pod of op's Job, or nil.
func (c *Controller) runningPod(ctx context.Context, op string) (*corev1.Pod, error) {
	pods, err := c.clients.Kube.CoreV1().Pods(c.cfg.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{csi.LabelOperation: op}).String()})
	if err != nil {
		return nil, err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && p.DeletionTimestamp == nil {
			return p, nil
		}
	}
	return nil, nil
}

// scrape reads the mover's progress from its Prometheus endpoint.
func scrape(ctx context.Context, hc *http.Client, ip string, port int32) (progress, error) {
	var p progress
	url := "http://" + net.JoinHostPort(ip, strconv.Itoa(int(port))) + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return p, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return p, fmt.Errorf("%s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return p, fmt.Errorf("%s: %w", url, err)
	}
	value := func(name string) (int64, bool) {
		f, ok := fams[name]
		if !ok || len(f.Metric) == 0 {
			return 0, false
		}
		return int64(metricValue(f.Metric[0])), true
	}
	var ok1, ok2 bool
	p.total, ok1 = value("mover_volume_size_bytes")
	p.done, ok2 = value("mover_processed_bytes_total")
	p.known = ok1 && ok2
	return p, nil
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// applyProgress moves a status from prepared to running once its mover
// pod runs (setting the start time and node), and copies known progress;
// it reports whether anything changed. It serves DataUpload and
// DataDownload statuses alike.
func applyProgress[P ~string](phase *P, start **metav1.Time, node *string, total, done *int64, prepared, running P, podNode string, p progress) bool {
	changed := false
	if *phase == prepared {
		*phase, changed = running, true
	}
	if *phase != running {
		return false
	}
	if *start == nil {
		*start, changed = now(), true
	}
	if podNode != "" && *node != podNode {
		*node, changed = podNode, true
	}
	if p.known && (*total != p.total || *done != p.done) {
		*total, *done, changed = p.total, p.done, true
	}
	return changed
}
