package csi

import (
	"context"
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRunCommand: mover commands in Jobs that mount no volume, on the real
// cluster, as the nobody user. An interrupted call leaves its Job: a rerun
// adopts it (one Job, its result), or, with Rerun, waits for it, deletes
// it and runs the new arguments in a second Job. A failing command is a
// JobFailedError with the mover's exit code. No Job is left.
func TestRunCommand(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	e.realRepo(nil)
	id := e.repoSnapshot(pattern(5, 1<<20))
	args := func(op string, cmd ...string) CommandArgs {
		return CommandArgs{Namespace: e.ns, Operation: op, Command: cmd, Job: e.jobOptions(), Timing: fastTiming()}
	}

	res, err := e.orch.RunCommand(e.ctx, args("check", "check"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.Raw), `"snapshots":1`) {
		t.Errorf("check's result %s", res.Raw)
	}
	for _, j := range e.seen.createdJobs() {
		sc := j.Spec.Template.Spec.Containers[0].SecurityContext
		if sc.RunAsUser == nil || *sc.RunAsUser != nobodyUID || !*sc.RunAsNonRoot || len(j.Spec.Template.Spec.Volumes) != 1 {
			t.Errorf("a command's Job: user %v, non-root %v, volumes %+v", sc.RunAsUser, *sc.RunAsNonRoot, j.Spec.Template.Spec.Volumes)
		}
	}
	if e.seen.jobsNamed(ObjectName("check")) != 1 {
		t.Errorf("%d Jobs for one call", e.seen.jobsNamed(ObjectName("check")))
	}
	e.settles(0, 0, 0)

	// Interrupted, then called again: the same Job's result.
	e.interruptWhileJobRuns("again", func(ctx context.Context) error {
		_, err := e.orch.RunCommand(ctx, args("again", "check"))
		return err
	})
	res, err = e.orch.RunCommand(e.ctx, args("again", "check"))
	if err != nil {
		t.Fatal(err)
	}
	if n, p := e.seen.jobsNamed(ObjectName("again")), e.seen.podsOf(ObjectName("again")); n != 1 || p != 1 || !strings.Contains(string(res.Raw), `"packs"`) {
		t.Errorf("adopted: %d Jobs, %d pods, result %s; want 1, 1 and check's result", n, p, res.Raw)
	}

	// Interrupted, then called with Rerun and other arguments: the old
	// Job ends and goes, and a new one runs them.
	e.interruptWhileJobRuns("fresh", func(ctx context.Context) error {
		_, err := e.orch.RunCommand(ctx, args("fresh", "check"))
		return err
	})
	a := args("fresh", "forget", "--keep-last=1", "--dry-run")
	a.Rerun = true
	res, err = e.orch.RunCommand(e.ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.seen.jobsNamed(ObjectName("fresh")); n != 2 || !strings.Contains(string(res.Raw), id) {
		t.Errorf("rerun: %d Jobs, result %s; want 2 and forget's, keeping %s", n, res.Raw, id)
	}

	// A command line the mover refuses: exit 2, permanent, one line.
	_, err = e.orch.RunCommand(e.ctx, args("bad", "forget"))
	var jf *JobFailedError
	if !errors.As(err, &jf) || jf.ExitCode != 2 || jf.Retryable || strings.Contains(jf.Message, "\n") {
		t.Errorf("a refused command: %v (%+v)", err, jf)
	}
	if _, err := e.orch.RunCommand(e.ctx, CommandArgs{Namespace: e.ns, Operation: "none", Job: e.jobOptions()}); !errors.Is(err, ErrInvalidArgs) {
		t.Errorf("no command: %v", err)
	}
	e.settles(0, 0, 0)
	if l, err := e.admin.Kube.BatchV1().Jobs(e.ns).List(e.ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Errorf("Jobs left: %v %v", l, err)
	}
}
