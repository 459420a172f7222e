package csi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockmover/blockmover/csi/internal/testcluster"
	"github.com/blockmover/blockmover/csi/internal/testdriver"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"google.golang.org/grpc/codes"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// volSize is the size of the tests' volumes: small, so that each mover
// run takes moments.
const volSize = 16 << 20

func (e *env) exportArgs(op, pvc string) ExportArgs {
	return ExportArgs{Namespace: e.ns, PVC: pvc, Operation: op, Job: e.jobOptions(), Timing: fastTiming(),
		Tags: map[string]string{"cluster": "test"}}
}

// sourceVolume makes the Block PVC "data" of volSize bytes, random in its
// first half, zero in the second (a hole), and returns its bytes.
func (e *env) sourceVolume() []byte {
	e.boundPVC("data", "16Mi", corev1.PersistentVolumeBlock)
	data := make([]byte, volSize)
	copy(data, pattern(1, volSize/2))
	e.fill("data", 0, data)
	return data
}

// TestExportEndToEnd: snapshot (snapshot-controller, csi-snapshotter),
// block clone (csi-provisioner), the mover Job on the kubelet, its result,
// cleanup (the finalizers of the real controllers honoured), as the
// orchestrator ServiceAccount with nothing but deploy/rbac.yaml; the
// repository snapshot holds the volume's bytes.
func TestExportEndToEnd(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	e.realRepo(nil)
	data := e.sourceVolume()
	res, err := e.orch.Export(e.ctx, e.exportArgs("backup-1", "data"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != volSize || res.NewBytes == 0 || res.Node != testcluster.NodeName || !strings.HasPrefix(string(res.Raw), "{") {
		t.Errorf("result %+v (node %q)", res.Result, res.Node)
	}
	if res.VolumeSnapshot != "mover-backup-1" || !strings.HasPrefix(res.SnapshotHandle, "snap-") || res.VolumeSnapshotContent == "" {
		t.Errorf("snapshot fields %+v", res)
	}
	jobs := e.seen.createdJobs()
	if len(jobs) != 1 {
		t.Fatalf("%d Jobs created", len(jobs))
	}
	checkExportJob(t, jobs[0], e.ns, "backup-1")
	// Node-local storage: the source PV carries the driver's topology (the
	// test driver's volumes are node-local), and the Job's pod must be
	// required onto that node, so that the clone is provisioned there.
	if !requiresNode(jobs[0], testdriver.TopologyKey, testcluster.NodeName) {
		t.Errorf("the Job's pod is not required onto %s=%s: affinity %+v", testdriver.TopologyKey, testcluster.NodeName, jobs[0].Spec.Template.Spec.Affinity)
	}
	if e.seen.podsOf(jobs[0].Name) != 1 {
		t.Errorf("%d pods for one export", e.seen.podsOf(jobs[0].Name))
	}
	if got := e.snapshotBytes(res.Snapshot); !bytes.Equal(got, data) {
		t.Error("the repository snapshot differs from the volume")
	}
	// Cleanup: the clone, the snapshot and the Job are gone, and with them
	// the clone's PV and the VolumeSnapshotContent; the source PVC stays.
	e.settles(0, 1, 0)
}

// requiresNode reports whether job's pod template requires, in every node
// selector term, the label key=value.
func requiresNode(job *batchv1.Job, key, value string) bool {
	a := job.Spec.Template.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return false
	}
	terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	for _, term := range terms {
		found := false
		for _, r := range term.MatchExpressions {
			if r.Key == key && r.Operator == corev1.NodeSelectorOpIn && slices.Contains(r.Values, value) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return len(terms) > 0
}

func checkExportJob(t *testing.T, job *batchv1.Job, ns, op string) {
	t.Helper()
	if job.Labels[LabelOperation] != op || job.Spec.Template.Labels[LabelOperation] != op {
		t.Errorf("labels %v", job.Labels)
	}
	spec := job.Spec.Template.Spec
	c := spec.Containers[0]
	if len(c.VolumeDevices) != 1 || c.VolumeDevices[0].DevicePath != DevicePath {
		t.Errorf("volumeDevices %+v", c.VolumeDevices)
	}
	if spec.Volumes[0].PersistentVolumeClaim == nil || spec.Volumes[0].PersistentVolumeClaim.ClaimName != ObjectName(op) || !spec.Volumes[0].PersistentVolumeClaim.ReadOnly {
		t.Errorf("volume %+v", spec.Volumes[0])
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"export", "--source=" + DevicePath, "--name=" + ns + "-data", "--tag=cluster=test", "--termination-log=" + TerminationLogPath, "--json", "--log-format=json"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	env := map[string]corev1.EnvVar{}
	for _, v := range c.Env {
		env[v.Name] = v
	}
	if r := env["MOVER_PASSWORD"].ValueFrom; r == nil || r.SecretKeyRef.Name != "repo" || *r.SecretKeyRef.Optional {
		t.Errorf("MOVER_PASSWORD %+v", env["MOVER_PASSWORD"])
	}
	if r := env["AWS_ACCESS_KEY_ID"].ValueFrom; r == nil || !*r.SecretKeyRef.Optional {
		t.Errorf("AWS_ACCESS_KEY_ID %+v", env["AWS_ACCESS_KEY_ID"])
	}
	if env["GOMEMLIMIT"].Value != "966367638" {
		t.Errorf("GOMEMLIMIT %+v", env["GOMEMLIMIT"])
	}
	sc := c.SecurityContext
	if *sc.Privileged || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || len(sc.Capabilities.Drop) != 1 || len(sc.Capabilities.Add) != 0 {
		t.Errorf("security context %+v", sc)
	}
	if *spec.AutomountServiceAccountToken || spec.RestartPolicy != corev1.RestartPolicyNever || spec.ServiceAccountName != moverSA {
		t.Errorf("pod spec: automount %v restart %s sa %s", *spec.AutomountServiceAccountToken, spec.RestartPolicy, spec.ServiceAccountName)
	}
	if *job.Spec.ActiveDeadlineSeconds != 6*3600 || *job.Spec.BackoffLimit != 2 || *job.Spec.TTLSecondsAfterFinished != 24*3600 {
		t.Errorf("job limits %d %d %d", *job.Spec.ActiveDeadlineSeconds, *job.Spec.BackoffLimit, *job.Spec.TTLSecondsAfterFinished)
	}
	if c.TerminationMessagePath != TerminationLogPath || c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
		t.Errorf("termination message %s %s", c.TerminationMessagePath, c.TerminationMessagePolicy)
	}
}

// TestExportCrashAndRerun: a control plane that dies mid-operation calls
// again with the same Operation and gets the objects of the first call.
func TestExportCrashAndRerun(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	e.realRepo(nil)
	data := e.sourceVolume()
	// First run: "crashes" (its context ends) once its Job exists.
	e.interruptWhileJobRuns("crash", func(ctx context.Context) error {
		_, err := e.orch.Export(ctx, e.exportArgs("crash", "data"))
		return err
	})
	if vs, pvcs, jobs, _ := e.count(); vs != 1 || pvcs != 2 || jobs != 1 {
		t.Fatalf("after the crash: %d VolumeSnapshots, %d PVCs, %d Jobs; want everything kept", vs, pvcs, jobs)
	}
	// Second run: reuses the snapshot, the clone and the Job.
	res, err := e.orch.Export(e.ctx, e.exportArgs("crash", "data"))
	if err != nil {
		t.Fatal(err)
	}
	if n, p := e.seen.jobsNamed(ObjectName("crash")), e.seen.podsOf(ObjectName("crash")); n != 1 || p != 1 {
		t.Errorf("%d Jobs and %d pods over both runs, want 1 and 1", n, p)
	}
	if got := e.snapshotBytes(res.Snapshot); !bytes.Equal(got, data) {
		t.Error("the rerun's snapshot differs from the volume")
	}
	e.settles(0, 1, 0)

	// A crash after which the Job finishes with nobody watching: the
	// rerun takes the finished Job's result and runs nothing again.
	e.interruptWhileJobRuns("late", func(ctx context.Context) error {
		_, err := e.orch.Export(ctx, e.exportArgs("late", "data"))
		return err
	})
	var job *batchv1.Job
	e.waitFor("the Job to finish on its own", func() bool {
		var err error
		job, err = e.admin.Kube.BatchV1().Jobs(e.ns).Get(e.ctx, ObjectName("late"), metav1.GetOptions{})
		return err == nil && jobCond(job, batchv1.JobComplete)
	})
	if vs, pvcs, jobs, _ := e.count(); vs != 1 || pvcs != 2 || jobs != 1 {
		t.Fatalf("after the late crash: %d VolumeSnapshots, %d PVCs, %d Jobs; want everything kept", vs, pvcs, jobs)
	}
	e.checkPodLogsJSON(ObjectName("late"))
	res, err = e.orch.Export(e.ctx, e.exportArgs("late", "data"))
	if err != nil {
		t.Fatal(err)
	}
	if n, p := e.seen.jobsNamed(ObjectName("late")), e.seen.podsOf(ObjectName("late")); n != 1 || p != 1 {
		t.Errorf("the rerun of a finished operation: %d Jobs, %d pods; want 1 and 1", n, p)
	}
	if got := e.snapshotBytes(res.Snapshot); !bytes.Equal(got, data) {
		t.Error("the finished Job's snapshot differs from the volume")
	}
	e.settles(0, 1, 0)
}

// interruptWhileJobRuns calls run with a context that ends (the control
// plane "crashes") once the Job of operation op exists, and checks that run
// returned the context's error.
func (e *env) interruptWhileJobRuns(op string, run func(ctx context.Context) error) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()
	e.waitFor("the mover Job", func() bool { return e.seen.jobsNamed(ObjectName(op)) > 0 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		e.t.Fatalf("interrupted operation: %v", err)
	}
}

// checkPodLogsJSON checks that every line the mover logged in the pods of
// Job job (through the API server, from the kubelet) is a JSON record.
func (e *env) checkPodLogsJSON(job string) {
	e.t.Helper()
	pods, err := e.admin.Kube.CoreV1().Pods(e.ns).List(e.ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + job})
	if err != nil || len(pods.Items) == 0 {
		e.t.Fatalf("pods of %s: %d (%v)", job, len(pods.Items), err)
	}
	for _, p := range pods.Items {
		b, err := e.admin.Kube.CoreV1().Pods(e.ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: ContainerName}).DoRaw(e.ctx)
		if err != nil {
			e.t.Fatalf("logs of %s: %v", p.Name, err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		for _, l := range lines {
			if !json.Valid([]byte(l)) {
				e.t.Errorf("a line the mover logged in pod %s is not JSON: %q", p.Name, l)
			}
		}
		if len(lines) == 0 || lines[0] == "" {
			e.t.Errorf("pod %s logged nothing", p.Name)
		}
	}
}

// TestExportSnapshotNeverReady: the driver cuts the snapshot but never
// says it is ready to use (a cloud snapshot still uploading, say): a
// clear timeout, and no leftovers.
func TestExportSnapshotNeverReady(t *testing.T) {
	e := newEnv(t)
	e.boundPVC("data", "16Mi", corev1.PersistentVolumeBlock)
	e.fault(func(dir string) error { return testdriver.InjectNotReady(dir, -1) })
	args := e.exportArgs("slow", "data")
	args.Timing.Snapshot = 5 * time.Second
	// The timeout counts from the snapshot bound and not ready (the
	// controllers of a loaded machine took 5 s and more to get there).
	var reached atomic.Int64 // when the wait saw it so, in Unix ns
	e.orch.snapshotTimeoutFrom = func(vs *snapv1.VolumeSnapshot) bool {
		st := vs.Status
		if st == nil || st.BoundVolumeSnapshotContentName == nil || st.ReadyToUse != nil && *st.ReadyToUse {
			return false
		}
		reached.CompareAndSwap(0, time.Now().UnixNano())
		return true
	}
	start := time.Now()
	_, err := e.orch.Export(e.ctx, args)
	if !IsTimeout(err) {
		t.Fatalf("want a timeout, got %v", err)
	}
	t.Logf("bound and not ready %v after the export started", time.Unix(0, reached.Load()).Sub(start).Round(time.Millisecond))
	for _, want := range []string{"VolumeSnapshot " + e.ns + "/mover-slow not ready", "after 5s", "readyToUse=false"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if d := time.Since(time.Unix(0, reached.Load())); d > 35*time.Second {
		t.Errorf("returned %v after the snapshot was bound and not ready", d)
	}
	e.settles(0, 1, 0)
}

// fault sets a fault of the test driver (shared by all tests) and clears
// it when the test ends.
func (e *env) fault(set func(stateDir string) error) {
	e.t.Helper()
	dir := cluster.DriverStateDir()
	if err := set(dir); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if err := testdriver.ClearFault(dir, "CreateSnapshot"); err != nil {
			e.t.Error(err)
		}
	})
}

// TestExportSnapshotError: the driver fails every CreateSnapshot; the
// snapshot controller puts its error on the VolumeSnapshot, which ends the
// wait at its timeout, with the driver's error.
func TestExportSnapshotError(t *testing.T) {
	e := newEnv(t)
	e.boundPVC("data", "16Mi", corev1.PersistentVolumeBlock)
	e.fault(func(dir string) error {
		return testdriver.InjectFault(dir, "CreateSnapshot", codes.ResourceExhausted, -1)
	})
	args := e.exportArgs("quota", "data")
	args.Timing.Snapshot = 5 * time.Second
	// The timeout counts from the error on the VolumeSnapshot (the
	// controllers of a loaded machine took 5 s and more to put it there).
	var reached time.Duration
	start := time.Now()
	e.orch.snapshotTimeoutFrom = func(vs *snapv1.VolumeSnapshot) bool {
		st := vs.Status
		if st == nil || st.Error == nil || st.Error.Message == nil || *st.Error.Message == "" {
			return false
		}
		reached = time.Since(start)
		return true
	}
	_, err := e.orch.Export(e.ctx, args)
	t.Logf("the error on the VolumeSnapshot %v after the export started", reached.Round(time.Millisecond))
	var se *SnapshotError
	if !errors.As(err, &se) || !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "ResourceExhausted") || !strings.Contains(err.Error(), "injected fault") {
		t.Fatalf("want the snapshot's error at the timeout, got %v", err)
	}
	if err := testdriver.ClearFault(cluster.DriverStateDir(), "CreateSnapshot"); err != nil {
		t.Fatal(err)
	}
	e.settles(0, 1, 0)
}

// TestExportSnapshotErrorClears: the driver fails CreateSnapshot twice
// (DeadlineExceeded); the csi-snapshotter retries, the snapshot controller
// puts the error on the VolumeSnapshot and clears it once a retry
// succeeds: the export goes on (issue 13, point 1).
func TestExportSnapshotErrorClears(t *testing.T) {
	e := newEnv(t)
	e.realRepo(nil)
	data := e.sourceVolume()
	e.fault(func(dir string) error {
		return testdriver.InjectFault(dir, "CreateSnapshot", codes.DeadlineExceeded, 2)
	})
	res, err := e.orch.Export(e.ctx, e.exportArgs("transient", "data"))
	if err != nil {
		t.Fatalf("export after a transient snapshot error: %v", err)
	}
	if b, _ := os.ReadFile(testdriver.FaultFile(cluster.DriverStateDir(), "CreateSnapshot")); strings.TrimSpace(string(b)) != "DeadlineExceeded 0" {
		t.Errorf("fault file %q: the driver did not fail twice", b)
	}
	if got := e.snapshotBytes(res.Snapshot); !bytes.Equal(got, data) {
		t.Error("the snapshot differs from the volume")
	}
	e.settles(0, 1, 0)
}

// TestExportJobFails: failures of the mover Job on the real Job controller
// and kubelet, each with the mover's own message.
func TestExportJobFails(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	var s3 s3Gate
	s3.refuse.Store(true)
	e.realRepo(&s3)
	e.sourceVolume()

	// S3 unreachable: a retryable failure (exit 1). With no retry left
	// (backoffLimit 0) the Job fails with BackoffLimitExceeded, and the
	// caller gets the mover's line.
	args := e.exportArgs("unreachable", "data")
	args.Job.BackoffLimit = ptr(int32(0))
	_, err := e.orch.Export(e.ctx, args)
	var jf *JobFailedError
	if !errors.As(err, &jf) || jf.Reason != "BackoffLimitExceeded" || jf.MoverReason != "Failed" || !jf.Retryable || jf.ExitCode != 1 ||
		!strings.Contains(jf.Message, "cannot reach bucket") {
		t.Fatalf("want the mover's retryable error, got %v (%+v)", err, jf)
	}
	t.Log(err)
	e.settles(0, 1, 0)
	s3.refuse.Store(false)

	// A permanent failure (exit 12, a wrong password) fails the Job at
	// once through its podFailurePolicy, and the mover's reason surfaces.
	wrong := e.secretCopy("repo", "wrong", map[string]string{SecretKeyPassword: "nope"})
	args = e.exportArgs("wrong-pw", "data")
	args.Job.Secret = wrong
	_, err = e.orch.Export(e.ctx, args)
	if !errors.As(err, &jf) || jf.Reason != "PodFailurePolicy" || jf.MoverReason != "WrongPassword" || jf.Retryable || jf.ExitCode != 12 ||
		!strings.HasPrefix(jf.Message, "wrong password") {
		t.Fatalf("want the mover's permanent error, got %v (%+v)", err, jf)
	}
	if n := e.seen.podsOf(ObjectName("wrong-pw")); n != 1 {
		t.Errorf("%d pods for a permanent failure, want 1 (no retry)", n)
	}

	// A container that cannot start (an image without the mover) leaves
	// the runtime's message, not JSON; it is shown as it is. Kept for a
	// look (KeepOnFailure), found again by a rerun, removed by Cleanup.
	args = e.exportArgs("no-mover", "data")
	args.Job.Image = testcluster.PauseImage
	args.Job.BackoffLimit = ptr(int32(0))
	args.KeepOnFailure = true
	_, err = e.orch.Export(e.ctx, args)
	if !errors.As(err, &jf) || !strings.Contains(jf.Message, "/mover") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	if vs, _, jobs, _ := e.count(); vs != 1 || jobs != 1 {
		t.Errorf("KeepOnFailure: %d VolumeSnapshots, %d Jobs kept", vs, jobs)
	}
	if _, err := e.orch.Export(e.ctx, args); !errors.As(err, &jf) {
		t.Errorf("rerun of a failed operation: %v", err)
	}
	if n := e.seen.jobsNamed(ObjectName("no-mover")); n != 1 {
		t.Errorf("%d Jobs created for the operation, want 1", n)
	}
	if err := e.orch.Cleanup(e.ctx, e.ns, "no-mover"); err != nil {
		t.Fatal(err)
	}
	e.settles(0, 1, 0)
}

// TestExportJobRetried: a transient failure is retried by the Job
// controller: the first pod fails while S3 is unreachable (the mover's
// exit 1, retryable), the second, made by the Job controller after its
// backoff, finds it reachable, and the export succeeds.
func TestExportJobRetried(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	var s3 s3Gate
	s3.refuse.Store(true)
	e.realRepo(&s3)
	data := e.sourceVolume()
	args := e.exportArgs("retried", "data")
	args.Job.BackoffLimit = ptr(int32(1))
	go func() {
		for e.ctx.Err() == nil {
			j, err := e.admin.Kube.BatchV1().Jobs(e.ns).Get(e.ctx, ObjectName("retried"), metav1.GetOptions{})
			if err == nil && j.Status.Failed > 0 {
				s3.refuse.Store(false)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	res, err := e.orch.Export(e.ctx, args)
	if err != nil {
		t.Fatalf("export with a transient failure: %v", err)
	}
	if n := e.seen.podsOf(ObjectName("retried")); n != 2 {
		t.Errorf("%d pods for a Job whose first pod failed transiently, want 2", n)
	}
	if got := e.snapshotBytes(res.Snapshot); !bytes.Equal(got, data) {
		t.Error("the snapshot differs from the volume")
	}
	e.settles(0, 1, 0)
}

// secretCopy creates Secret name as a copy of from with some keys changed.
func (e *env) secretCopy(from, name string, set map[string]string) string {
	e.t.Helper()
	s, err := e.admin.Kube.CoreV1().Secrets(e.ns).Get(e.ctx, from, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	s.ObjectMeta = metav1.ObjectMeta{Name: name}
	for k, v := range set {
		s.Data[k] = []byte(v)
	}
	if _, err := e.admin.Kube.CoreV1().Secrets(e.ns).Create(e.ctx, s, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	return name
}

// TestExportFilesystemMode: a Filesystem-mode PVC is cloned as a Block PVC
// only with the allow-volume-mode-change annotation; without the permission
// to set it the error says which. With both, the export reads the volume.
func TestExportFilesystemMode(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	e.realRepo(nil)
	e.boundPVC("files", "16Mi", corev1.PersistentVolumeFilesystem)
	data := pattern(2, volSize)
	e.fill("files", 0, data)
	args := e.exportArgs("fs", "files")
	args.KeepOnFailure = true
	_, err := e.orch.Export(e.ctx, args)
	if !errors.Is(err, ErrVolumeModeChange) || !strings.Contains(err.Error(), "AllowVolumeModeChange") {
		t.Fatalf("without AllowVolumeModeChange: %v", err)
	}
	args.AllowVolumeModeChange = true
	_, err = e.orch.Export(e.ctx, args)
	if !errors.Is(err, ErrVolumeModeChange) || !errors.Is(err, ErrForbidden) ||
		!strings.Contains(err.Error(), `needs the verb "patch" on volumesnapshotcontents`) {
		t.Fatalf("without the RBAC: %v", err)
	}
	t.Log(err)
	e.applyManifest("../deploy/volume-mode-change.yaml")
	waitAllowed(t, e, "patch", "snapshot.storage.k8s.io", "volumesnapshotcontents", "")
	res, err := e.orch.Export(e.ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	vsc, err := e.admin.Snapshot.SnapshotV1().VolumeSnapshotContents().Get(e.ctx, res.VolumeSnapshotContent, metav1.GetOptions{})
	if err == nil && vsc.Annotations[AnnotationAllowVolumeModeChange] != "true" {
		t.Errorf("annotations %v", vsc.Annotations)
	}
	if n := len(e.seen.createdJobs()); n != 1 {
		t.Errorf("%d Jobs", n)
	}
	if got := e.snapshotBytes(res.Snapshot); !bytes.Equal(got, data) {
		t.Error("the snapshot differs from the Filesystem volume's bytes")
	}
	e.settles(0, 1, 0)
}

// repoSnapshot exports data from a file on the host into the test's
// repository as volume "v" and returns the snapshot ID.
func (e *env) repoSnapshot(data []byte) string {
	e.t.Helper()
	f := filepath.Join(e.t.TempDir(), "v.img")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	var r struct {
		Snapshot string `json:"snapshot"`
	}
	if err := json.Unmarshal(e.hostMover("export", "--source", f, "--name", "v", "--json"), &r); err != nil || r.Snapshot == "" {
		e.t.Fatalf("export on the host: %v", err)
	}
	return r.Snapshot
}

// TestImportBlock: a new Block PVC and the import Job; the PVC stays and
// holds the snapshot's bytes. The control plane dies while the Job runs,
// which then finishes with nobody watching (the crash window between the
// Job's end and the record of its result on the PVC): the rerun takes the
// finished Job's result and records it. Once the import is done, a rerun
// of the operation returns the recorded result and writes nothing: what
// an application wrote on the restored volume meanwhile stays.
func TestImportBlock(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	e.realRepo(nil)
	data := make([]byte, volSize)
	copy(data[volSize/4:], pattern(3, volSize/2))
	snap := e.repoSnapshot(data)
	args := ImportArgs{Namespace: e.ns, PVC: "restored", Operation: "restore-1", Snapshot: snap, Size: volSize,
		StorageClass: testStorageClass, Job: e.jobOptions(), Timing: fastTiming()}
	// First call: the control plane dies while the Job runs, and the Job
	// finishes before it is back.
	e.interruptWhileJobRuns("restore-1", func(ctx context.Context) error {
		_, err := e.orch.Import(ctx, args)
		return err
	})
	e.waitFor("the import Job to finish on its own", func() bool {
		job, err := e.admin.Kube.BatchV1().Jobs(e.ns).Get(e.ctx, ObjectName("restore-1"), metav1.GetOptions{})
		return err == nil && jobCond(job, batchv1.JobComplete)
	})
	first, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, "restored", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := first.Annotations[AnnotationImport]; ok {
		t.Fatalf("the PVC records an import nobody saw finish: %s", v)
	}
	// The rerun finds the PVC and the finished Job.
	res, err := e.orch.Import(e.ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.seen.jobsNamed(ObjectName("restore-1")); n != 1 {
		t.Errorf("%d Jobs created over both calls, want 1", n)
	}
	if res.PVC != "restored" || res.Pending || res.Size != volSize || res.Snapshot != snap {
		t.Errorf("%+v", res)
	}
	pvc, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, "restored", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *pvc.Spec.VolumeMode != corev1.PersistentVolumeBlock || pvc.Spec.Resources.Requests.Storage().Value() < volSize || pvc.UID != first.UID {
		t.Errorf("PVC %+v", pvc.Spec)
	}
	var rec struct {
		Operation, Snapshot string
		Result              json.RawMessage
	}
	if err := json.Unmarshal([]byte(pvc.Annotations[AnnotationImport]), &rec); err != nil || rec.Operation != "restore-1" || rec.Snapshot != snap || !sameJSON(rec.Result, res.Raw) {
		t.Errorf("annotation %s: %q (%v), want operation restore-1, snapshot %s and the result %s", AnnotationImport, pvc.Annotations[AnnotationImport], err, snap, res.Raw)
	}
	e.settles(0, 1, 0)
	if got, err := os.ReadFile(e.volumeFile("restored")); err != nil || !bytes.Equal(got[:volSize], data) {
		t.Errorf("the restored volume differs from the snapshot (%v)", err)
	}
	job := e.seen.createdJobs()[0]
	args2 := strings.Join(job.Spec.Template.Spec.Containers[0].Args, " ")
	if !strings.HasPrefix(args2, "import --snapshot="+snap+" --target="+DevicePath) || job.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ReadOnly {
		t.Errorf("import Job args %q", args2)
	}

	// An application writes on the restored volume; the operation runs
	// again after its cleanup and returns the recorded result, with no Job.
	app := pattern(30, 4096)
	e.fill("restored", 0, app)
	again, err := e.orch.Import(e.ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.seen.jobsNamed(ObjectName("restore-1")); n != 1 {
		t.Errorf("%d Jobs of the operation after it ran again, want 1", n)
	}
	if again.PVC != "restored" || again.Snapshot != snap || again.Size != res.Size || !sameJSON(again.Raw, res.Raw) {
		t.Errorf("the rerun's result %+v, want the recorded %s", again, res.Raw)
	}
	want := bytes.Clone(data)
	copy(want, app)
	if got, err := os.ReadFile(e.volumeFile("restored")); err != nil || !bytes.Equal(got[:volSize], want) {
		t.Errorf("the rerun changed the restored volume (%v)", err)
	}
	// The same operation asking for another snapshot, and another
	// operation onto the PVC, are refused.
	other := args
	other.Snapshot = "latest"
	if _, err := e.orch.Import(e.ctx, other); !errors.Is(err, ErrConflict) {
		t.Errorf("the operation again with another snapshot: %v", err)
	}
	other = args
	other.Operation = "restore-2"
	if _, err := e.orch.Import(e.ctx, other); !errors.Is(err, ErrConflict) {
		t.Errorf("import onto a PVC of another operation: %v", err)
	}
	if n := e.seen.jobsNamed(ObjectName("restore-2")); n != 0 {
		t.Errorf("%d Jobs of the conflicting operation, want none", n)
	}
	e.settles(0, 1, 0)

	// The crash window between the record and the cleanup: the
	// orchestrator dies as it deletes the finished Job. The result is on
	// the PVC by then, and the rerun returns it without a new Job.
	args.PVC, args.Operation = "restored-3", "restore-3"
	ctx, kill := context.WithCancel(e.ctx)
	defer kill()
	var atDelete atomic.Value // the PVC's record when the Job's deletion was asked
	cfg := rest.CopyConfig(e.orchCfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodDelete && strings.HasSuffix(r.URL.Path, "/jobs/"+ObjectName("restore-3")) {
				pvc, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(context.Background(), "restored-3", metav1.GetOptions{})
				if err == nil {
					atDelete.Store(pvc.Annotations[AnnotationImport])
				}
				kill()
				return nil, ctx.Err()
			}
			return rt.RoundTrip(r)
		})
	}
	dying, err := NewClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dying.Import(ctx, args); err == nil {
		t.Fatal("the import killed in its cleanup succeeded")
	}
	if v, _ := atDelete.Load().(string); !strings.Contains(v, `"operation":"restore-3"`) {
		t.Fatalf("the PVC's record when the Job was deleted: %q", v)
	}
	if _, _, jobs, _ := e.count(); jobs != 1 {
		t.Fatalf("%d Jobs after the kill, want the finished one", jobs)
	}
	res3, err := e.orch.Import(e.ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.seen.jobsNamed(ObjectName("restore-3")); n != 1 || res3.Snapshot != snap || res3.Size != volSize {
		t.Errorf("the rerun after a kill in the cleanup: %d Jobs, result %+v", n, res3)
	}
	e.settles(0, 2, 0)
	if got, err := os.ReadFile(e.volumeFile("restored-3")); err != nil || !bytes.Equal(got[:volSize], data) {
		t.Errorf("the second restored volume differs from the snapshot (%v)", err)
	}
	// The record's patch names the PVC's UID: it never lands on another
	// PVC of the same name.
	stale := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{UID: "00000000-0000-0000-0000-000000000000"}}
	if err := e.orch.recordImport(e.ctx, e.ns, "restored-3", stale, `{"operation":"other"}`, time.Millisecond); err == nil {
		t.Error("a record for a PVC of another UID was written")
	}
	if pvc, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, "restored-3", metav1.GetOptions{}); err != nil || !strings.Contains(pvc.Annotations[AnnotationImport], `"operation":"restore-3"`) {
		t.Errorf("the record after a patch for another UID: %q (%v)", pvc.Annotations[AnnotationImport], err)
	}
}

// sameJSON reports whether a and b are the same JSON text but for
// insignificant space.
func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}

// TestImportFilesystem: block staging PVC, import, snapshot with the
// mode-change annotation, Filesystem PVC restored from it (by the real
// csi-provisioner), staging removed.
func TestImportFilesystem(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	e.realRepo(nil)
	data := pattern(4, volSize)
	e.repoSnapshot(data)
	e.applyManifest("../deploy/volume-mode-change.yaml")
	args := ImportArgs{Namespace: e.ns, PVC: "files", Operation: "restore-fs", Snapshot: "latest:v", Size: volSize,
		StorageClass: testStorageClass, VolumeMode: corev1.PersistentVolumeFilesystem, AllowVolumeModeChange: true,
		Job: e.jobOptions(), Timing: fastTiming()}
	waitAllowed(t, e, "patch", "snapshot.storage.k8s.io", "volumesnapshotcontents", "")
	res, err := e.orch.Import(e.ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	pvc, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, "files", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *pvc.Spec.VolumeMode != corev1.PersistentVolumeFilesystem || pvc.Spec.DataSource.Name != ObjectName("restore-fs") || pvc.Status.Phase != corev1.ClaimBound {
		t.Errorf("PVC %+v %s", pvc.Spec, pvc.Status.Phase)
	}
	if res.Pending {
		t.Error("pending on an Immediate class")
	}
	if rec := pvc.Annotations[AnnotationImport]; !strings.Contains(rec, `"operation":"restore-fs"`) || !strings.Contains(rec, res.Snapshot) {
		t.Errorf("annotation %s: %q", AnnotationImport, rec)
	}
	e.settles(0, 1, 0)
	if got, err := os.ReadFile(e.volumeFile("files")); err != nil || !bytes.Equal(got[:volSize], data) {
		t.Errorf("the restored Filesystem volume differs from the snapshot (%v)", err)
	}
	// Once done, a rerun returns the recorded result: no Job, no staging
	// volume, no snapshot.
	again, err := e.orch.Import(e.ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.seen.jobsNamed(ObjectName("restore-fs")); n != 1 || again.Snapshot != res.Snapshot || again.Pending || again.PVC != "files" {
		t.Errorf("the rerun of a finished Filesystem import: %d Jobs, %+v", n, again)
	}
	e.settles(0, 1, 0)
}

// waitAllowed waits until RBAC lets the orchestrator do verb (the
// authorizer's cache follows new bindings within moments).
func waitAllowed(t *testing.T, e *env, verb, group, resource, ns string) {
	t.Helper()
	e.waitFor("RBAC to allow "+verb+" "+resource, func() bool {
		return e.can(orchestratorSA, verb, group, resource, "", ns, "")
	})
}
