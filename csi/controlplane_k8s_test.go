package csi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// TestControlPlaneKilled: kube-apiserver and kube-controller-manager are
// killed (SIGKILL) while Export waits on its mover Job, whose pod runs,
// and stay down until the mover in the pod has written its snapshot (the
// kubelet cannot report it, the Job controller is gone). The waiting
// Export neither fails nor cleans up: its wait retries the refused
// connections with backoff, and once both are back the same call returns
// the result of the run the control plane missed: one Job, one pod,
// nothing left behind.
func TestControlPlaneKilled(t *testing.T) {
	e := newEnv(t)
	var s3 s3Gate
	s3.hold.Store(true)
	e.realRepo(&s3)
	data := e.sourceVolume()
	args := e.exportArgs("outage", "data")
	args.Volume = "outage"
	args.Timing.Job = 5 * time.Minute // the outage and a loaded machine's restart
	type outcome struct {
		res *ExportResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := e.orch.Export(e.ctx, args)
		done <- outcome{res, err}
	}()
	// The mover in the pod is held at its first S3 request (its
	// connection waits, unanswered) until the control plane is down.
	e.waitFor("the mover running", func() bool {
		pods, err := e.admin.Kube.CoreV1().Pods(e.ns).List(e.ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + ObjectName("outage")})
		return err == nil && len(pods.Items) == 1 && pods.Items[0].Status.Phase == corev1.PodRunning
	})
	restarted := false
	restart := func() {
		if restarted {
			return
		}
		restarted = true
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := cluster.RestartComponents(ctx, "kube-apiserver", "kube-controller-manager"); err != nil {
			t.Fatalf("restarting the control plane: %v", err)
		}
	}
	t.Cleanup(restart) // the cluster is shared: bring it back whatever happens
	if err := cluster.KillComponents("kube-controller-manager", "kube-apiserver"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	s3.hold.Store(false)
	// The mover finishes meanwhile: its snapshot appears in the repository.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(string(e.hostMover("snapshots", "--volume", "outage")), "outage") {
		if time.Now().After(deadline) {
			t.Fatal("the mover pod wrote no snapshot while the control plane was down")
		}
		time.Sleep(500 * time.Millisecond)
	}
	select {
	case o := <-done:
		t.Fatalf("the export returned while the API server was down: %+v, %v", o.res, o.err)
	default:
	}
	restart()
	t.Logf("control plane back %v after the kill", time.Since(killed).Round(time.Millisecond))

	var o outcome
	select {
	case o = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("the export did not return within 3 minutes of the control plane's return")
	}
	if o.err != nil {
		t.Fatalf("the export across the outage: %v", o.err)
	}
	t.Logf("the export returned %v after the kill", time.Since(killed).Round(time.Millisecond))
	if n, p := e.seen.jobsNamed(ObjectName("outage")), e.seen.podsOf(ObjectName("outage")); n != 1 || p != 1 {
		t.Errorf("%d Jobs and %d pods over the outage, want 1 and 1", n, p)
	}
	if got := e.snapshotBytes(o.res.Snapshot); !bytes.Equal(got, data) {
		t.Error("the snapshot differs from the volume")
	}
	if out := e.hostMover("snapshots", "--volume", "outage"); strings.Count(string(out), o.res.Snapshot[:8]) != 1 {
		t.Errorf("repository snapshots of the volume:\n%s\nwant the one of the run the control plane missed (%s)", out, o.res.Snapshot)
	}
	e.settles(0, 1, 0)
}

// TestExportAPIErrorKeepsJob: while the mover Job runs, the API server
// answers the waiting Export's looks at the Job with an error that no retry
// fixes (a 403 from then on, as a revoked RoleBinding would give; injected
// between the orchestrator's client and the real API server). The Export
// takes it for a restarted API server's for restartGrace, then fails with
// it, but its cleanup does not delete the Job, which is still running:
// every object stays, and the rerun adopts the Job: one Job, one pod.
func TestExportAPIErrorKeepsJob(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	var s3 s3Gate
	s3.hold.Store(true)
	e.realRepo(&s3)
	data := e.sourceVolume()
	args := e.exportArgs("denied", "data")
	var deny atomic.Bool // looks at the Job are denied
	cfg := rest.CopyConfig(e.orchCfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/jobs/"+ObjectName("denied")) && deny.Load() {
				body := `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,` +
					`"message":"jobs.batch \"mover-denied\" is forbidden: injected"}`
				return &http.Response{StatusCode: http.StatusForbidden, Header: http.Header{"Content-Type": {"application/json"}},
					Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
			}
			return rt.RoundTrip(r)
		})
	}
	orch, err := NewClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := orch.Export(e.ctx, args)
		errc <- err
	}()
	e.waitFor("the mover running", func() bool {
		pods, err := e.admin.Kube.CoreV1().Pods(e.ns).List(e.ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + ObjectName("denied")})
		return err == nil && len(pods.Items) == 1 && pods.Items[0].Status.Phase == corev1.PodRunning
	})
	deny.Store(true)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "injected") || !strings.Contains(err.Error(), "kept") {
			t.Fatalf("the export denied a look at its Job: %v", err)
		}
		t.Logf("the export: %v", err)
	case <-time.After(restartGrace + time.Minute):
		t.Fatal("the export went on after a 403 that lasted")
	}
	job, err := e.admin.Kube.BatchV1().Jobs(e.ns).Get(e.ctx, ObjectName("denied"), metav1.GetOptions{})
	if err != nil || job.DeletionTimestamp != nil || jobCond(job, batchv1.JobComplete) || jobCond(job, batchv1.JobFailed) {
		t.Fatalf("the running Job after the failed wait: %v", err)
	}
	if vs, pvcs, jobs, _ := e.count(); vs != 1 || pvcs != 2 || jobs != 1 {
		t.Fatalf("after the failed wait: %d VolumeSnapshots, %d PVCs, %d Jobs; want everything kept", vs, pvcs, jobs)
	}
	s3.hold.Store(false)
	res, err := e.orch.Export(e.ctx, args)
	if err != nil {
		t.Fatalf("the rerun: %v", err)
	}
	if n, p := e.seen.jobsNamed(ObjectName("denied")), e.seen.podsOf(ObjectName("denied")); n != 1 || p != 1 {
		t.Errorf("%d Jobs and %d pods over both calls, want 1 and 1", n, p)
	}
	if got := e.snapshotBytes(res.Snapshot); !bytes.Equal(got, data) {
		t.Error("the snapshot differs from the volume")
	}
	e.settles(0, 1, 0)
}

// roundTripFunc lets a test stand between a client and the real API
// server, to inject a fault.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
