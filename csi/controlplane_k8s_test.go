package csi

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestControlPlaneKilled: kube-apiserver and kube-controller-manager are
// killed (SIGKILL) while Export waits on its mover Job, whose pod runs,
// and stay down until the mover in the pod has written its snapshot (the kubelet cannot
// report it, the Job controller is gone). The waiting Export fails
// promptly with the API server's error and, unable to clean up, leaves
// every object; once both are back, the rerun adopts the Job, whose pod
// the kubelet then reports Succeeded: one Job, one pod, the result of the
// run the control plane missed, and nothing left behind.
func TestControlPlaneKilled(t *testing.T) {
	e := newEnv(t)
	var s3 s3Gate
	s3.hold.Store(true)
	e.realRepo(&s3)
	data := e.sourceVolume()
	args := e.exportArgs("outage", "data")
	args.Volume = "outage"
	errc := make(chan error, 1)
	go func() {
		_, err := e.orch.Export(e.ctx, args)
		errc <- err
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
	s3.hold.Store(false)
	start := time.Now()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("the export succeeded with the API server down")
		}
		t.Logf("the waiting export, %v after the kill: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(time.Minute):
		t.Fatal("the waiting export did not return within a minute of the API server's death")
	}
	// The mover finishes meanwhile: its snapshot appears in the repository.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(string(e.hostMover("snapshots", "--volume", "outage")), "outage") {
		if time.Now().After(deadline) {
			t.Fatal("the mover pod wrote no snapshot while the control plane was down")
		}
		time.Sleep(500 * time.Millisecond)
	}
	restart()
	if vs, pvcs, jobs, _ := e.count(); vs != 1 || pvcs != 2 || jobs != 1 {
		t.Fatalf("after the outage: %d VolumeSnapshots, %d PVCs, %d Jobs; want everything kept", vs, pvcs, jobs)
	}

	res, err := e.orch.Export(e.ctx, args)
	if err != nil {
		t.Fatalf("the rerun after the outage: %v", err)
	}
	if n, p := e.seen.jobsNamed(ObjectName("outage")), e.seen.podsOf(ObjectName("outage")); n != 1 || p != 1 {
		t.Errorf("%d Jobs and %d pods over the outage, want 1 and 1", n, p)
	}
	if got := e.snapshotBytes(res.Snapshot); !bytes.Equal(got, data) {
		t.Error("the snapshot differs from the volume")
	}
	if out := e.hostMover("snapshots", "--volume", "outage"); strings.Count(string(out), res.Snapshot[:8]) != 1 {
		t.Errorf("repository snapshots of the volume:\n%s\nwant the one of the run the control plane missed (%s)", out, res.Snapshot)
	}
	e.settles(0, 1, 0)
}
