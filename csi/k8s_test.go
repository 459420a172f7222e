package csi

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (e *env) exportArgs(op, pvc string) ExportArgs {
	return ExportArgs{Namespace: e.ns, PVC: pvc, Operation: op, Job: e.jobOptions(), Timing: fastTiming(),
		Tags: map[string]string{"cluster": "test"}}
}

// TestExportEndToEnd: snapshot, block clone, Job, result, cleanup, as the
// orchestrator ServiceAccount with nothing but deploy/rbac.yaml.
func TestExportEndToEnd(t *testing.T) {
	e := newEnv(t)
	e.boundPVC("data", "1Gi", corev1.PersistentVolumeBlock)
	res, err := e.orch.Export(e.ctx, e.exportArgs("backup-1", "data"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot != "0123abcd" || res.Size != 1<<30 || res.StoredBytes != 3 || !strings.HasPrefix(string(res.Raw), "{") {
		t.Errorf("result %+v", res.Result)
	}
	if res.VolumeSnapshot != "mover-backup-1" || res.SnapshotHandle == "" || res.VolumeSnapshotContent == "" {
		t.Errorf("snapshot fields %+v", res)
	}
	jobs := e.fake.createdJobs()
	if len(jobs) != 1 {
		t.Fatalf("%d Jobs created", len(jobs))
	}
	checkExportJob(t, jobs[0], e.ns, "backup-1")
	// Cleanup: the clone, the snapshot and the Job are gone; the source
	// PVC stays. (Pods go with the Job through the garbage collector,
	// which does not run here.)
	vs, pvcs, nj, _ := e.count()
	if vs != 0 || pvcs != 1 || nj != 0 {
		t.Errorf("after cleanup: %d VolumeSnapshots, %d PVCs, %d Jobs", vs, pvcs, nj)
	}
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
	e := newEnv(t)
	e.boundPVC("data", "1Gi", corev1.PersistentVolumeBlock)
	// First run: "crashes" (its context ends) once the Job is running.
	e.interruptWhileJobRuns(func(ctx context.Context) error {
		_, err := e.orch.Export(ctx, e.exportArgs("crash", "data"))
		return err
	})
	vs, pvcs, jobs, pods := e.count()
	if vs != 1 || pvcs != 2 || jobs != 1 || pods != 1 {
		t.Fatalf("after the crash: %d VolumeSnapshots, %d PVCs, %d Jobs, %d pods; want everything kept", vs, pvcs, jobs, pods)
	}

	// Second run: reuses the snapshot, the clone and the running Job.
	e.fake.set(func(f *fakeControllers) { f.holdJobs = false })
	res, err := e.orch.Export(e.ctx, e.exportArgs("crash", "data"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot != "0123abcd" {
		t.Errorf("result %+v", res.Result)
	}
	if n := len(e.fake.createdJobs()); n != 1 {
		t.Errorf("%d Jobs created over both runs, want 1", n)
	}
	if vs, pvcs, jobs, _ := e.count(); vs != 0 || pvcs != 1 || jobs != 0 {
		t.Errorf("after the rerun: %d VolumeSnapshots, %d PVCs, %d Jobs", vs, pvcs, jobs)
	}

	// A crash after the Job finished but before cleanup: the control
	// plane dies while the mover writes its result. The rerun takes the
	// finished Job's result and creates nothing.
	ctx2, cancel2 := context.WithCancel(e.ctx)
	defer cancel2()
	e.fake.set(func(f *fakeControllers) {
		f.runPod = func(*batchv1.Job, *corev1.Pod) (int32, string) {
			cancel2()
			return 0, `{"snapshot":"1a7e0001","volume":"v","size":1073741824}`
		}
	})
	if _, err := e.orch.Export(ctx2, e.exportArgs("late", "data")); !errors.Is(err, context.Canceled) {
		t.Fatalf("export interrupted as its Job finishes: %v", err)
	}
	e.waitFor("the finished Job", func() bool {
		j, err := e.admin.Kube.BatchV1().Jobs(e.ns).Get(e.ctx, ObjectName("late"), metav1.GetOptions{})
		return err == nil && jobCond(j, batchv1.JobComplete)
	})
	if vs, pvcs, jobs, _ := e.count(); vs != 1 || pvcs != 2 || jobs != 1 {
		t.Fatalf("after the late crash: %d VolumeSnapshots, %d PVCs, %d Jobs; want everything kept", vs, pvcs, jobs)
	}
	e.fake.set(func(f *fakeControllers) {
		f.runPod = func(*batchv1.Job, *corev1.Pod) (int32, string) {
			t.Error("the rerun ran the mover again")
			return 1, ""
		}
	})
	res, err = e.orch.Export(e.ctx, e.exportArgs("late", "data"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot != "1a7e0001" {
		t.Errorf("rerun result %+v, want the finished Job's", res.Result)
	}
	if n := len(e.fake.createdJobs()); n != 2 {
		t.Errorf("%d Jobs created, want 2 (one per operation)", n)
	}
	if vs, pvcs, jobs, _ := e.count(); vs != 0 || pvcs != 1 || jobs != 0 {
		t.Errorf("after the rerun: %d VolumeSnapshots, %d PVCs, %d Jobs", vs, pvcs, jobs)
	}
}

// interruptWhileJobRuns calls run with a context that ends (the control
// plane "crashes") once the fake Job controller has made the pod of a new
// Job, and checks that run returned the context's error. Pods are held
// running until the caller sets holdJobs back to false.
func (e *env) interruptWhileJobRuns(run func(ctx context.Context) error) {
	e.t.Helper()
	e.fake.set(func(f *fakeControllers) { f.holdJobs = true })
	n := len(e.fake.createdJobs())
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()
	e.waitFor("the mover Job", func() bool { return len(e.fake.createdJobs()) > n })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		e.t.Fatalf("interrupted operation: %v", err)
	}
}

// TestExportSnapshotNeverReady: a clear timeout, and no leftovers.
func TestExportSnapshotNeverReady(t *testing.T) {
	e := newEnv(t)
	e.boundPVC("data", "1Gi", corev1.PersistentVolumeBlock)
	e.fake.set(func(f *fakeControllers) {
		f.snapshotState = func(*snapv1.VolumeSnapshot) (bool, string) { return false, "" }
	})
	args := e.exportArgs("slow", "data")
	args.Timing.Snapshot = time.Second
	start := time.Now()
	_, err := e.orch.Export(e.ctx, args)
	if !IsTimeout(err) {
		t.Fatalf("want a timeout, got %v", err)
	}
	for _, want := range []string{"VolumeSnapshot " + e.ns + "/mover-slow not ready", "after 1s", "snapshot controller"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	if vs, pvcs, jobs, _ := e.count(); vs != 0 || pvcs != 1 || jobs != 0 {
		t.Errorf("leftovers: %d VolumeSnapshots, %d PVCs, %d Jobs", vs, pvcs, jobs)
	}
}

// TestExportSnapshotError: a status.error that never clears ends the wait
// at its timeout, with the driver's error.
func TestExportSnapshotError(t *testing.T) {
	e := newEnv(t)
	e.boundPVC("data", "1Gi", corev1.PersistentVolumeBlock)
	e.fake.set(func(f *fakeControllers) {
		f.snapshotState = func(*snapv1.VolumeSnapshot) (bool, string) {
			return false, "rpc error: code = ResourceExhausted desc = snapshot quota exceeded"
		}
	})
	args := e.exportArgs("quota", "data")
	args.Timing.Snapshot = 2 * time.Second
	_, err := e.orch.Export(e.ctx, args)
	var se *SnapshotError
	if !errors.As(err, &se) || !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "snapshot quota exceeded") {
		t.Fatalf("want the snapshot's error at the timeout, got %v", err)
	}
}

// TestExportSnapshotErrorClears: the snapshot controller reports a
// transient error of the driver, then clears it when its retry succeeds:
// the export goes on (issue 13, point 1).
func TestExportSnapshotErrorClears(t *testing.T) {
	e := newEnv(t)
	e.boundPVC("data", "1Gi", corev1.PersistentVolumeBlock)
	calls := 0
	e.fake.set(func(f *fakeControllers) {
		f.snapshotState = func(*snapv1.VolumeSnapshot) (bool, string) {
			calls++
			if calls <= 3 {
				return false, "rpc error: code = DeadlineExceeded desc = context deadline exceeded"
			}
			return true, ""
		}
	})
	if _, err := e.orch.Export(e.ctx, e.exportArgs("transient", "data")); err != nil {
		t.Fatalf("export after a transient snapshot error: %v", err)
	}
}

// TestExportJobFails: the mover's own error, from its termination message.
func TestExportJobFails(t *testing.T) {
	e := newEnv(t)
	e.boundPVC("data", "1Gi", corev1.PersistentVolumeBlock)
	e.fake.set(func(f *fakeControllers) {
		f.runPod = func(*batchv1.Job, *corev1.Pod) (int32, string) {
			return 1, `{"error":"wrong password or no key file matches"}`
		}
	})
	_, err := e.orch.Export(e.ctx, e.exportArgs("fails", "data"))
	var jf *JobFailedError
	if !errors.As(err, &jf) || jf.Reason != "BackoffLimitExceeded" || jf.Message != "wrong password or no key file matches" {
		t.Fatalf("want the mover's error, got %v", err)
	}
	t.Log(err)
	if vs, pvcs, jobs, _ := e.count(); vs != 0 || pvcs != 1 || jobs != 0 {
		t.Errorf("leftovers: %d VolumeSnapshots, %d PVCs, %d Jobs", vs, pvcs, jobs)
	}

	// A permanent failure (exit 12, a wrong password) fails the Job at
	// once through its podFailurePolicy, and the mover's reason surfaces.
	e.fake.set(func(f *fakeControllers) {
		f.runPod = func(*batchv1.Job, *corev1.Pod) (int32, string) {
			return 12, `{"error":"wrong password: no key file of the repository matches it","exit_code":12,"reason":"WrongPassword","retryable":false}`
		}
	})
	_, err = e.orch.Export(e.ctx, e.exportArgs("wrong-pw", "data"))
	if !errors.As(err, &jf) || jf.Reason != "PodFailurePolicy" || jf.MoverReason != "WrongPassword" || jf.Retryable || jf.ExitCode != 12 ||
		!strings.HasPrefix(jf.Message, "wrong password") {
		t.Fatalf("want the mover's permanent error, got %v (%+v)", err, jf)
	}

	// A crash (no JSON) leaves the log tail in the message
	// (FallbackToLogsOnError); it is shown as it is.
	e.fake.set(func(f *fakeControllers) {
		f.runPod = func(*batchv1.Job, *corev1.Pod) (int32, string) { return 2, "panic: runtime error\ngoroutine 1" }
	})
	args := e.exportArgs("panics", "data")
	args.KeepOnFailure = true
	_, err = e.orch.Export(e.ctx, args)
	if !errors.As(err, &jf) || !strings.Contains(jf.Message, "panic: runtime error") {
		t.Fatalf("got %v", err)
	}
	if vs, _, jobs, _ := e.count(); vs != 1 || jobs != 1 {
		t.Errorf("KeepOnFailure: %d VolumeSnapshots, %d Jobs kept", vs, jobs)
	}
	// A rerun reports the same failure without a new Job; Cleanup clears.
	if _, err := e.orch.Export(e.ctx, args); !errors.As(err, &jf) {
		t.Errorf("rerun of a failed operation: %v", err)
	}
	if n := len(e.fake.createdJobs()); n != 3 {
		t.Errorf("%d Jobs created", n)
	}
	if err := e.orch.Cleanup(e.ctx, e.ns, "panics"); err != nil {
		t.Fatal(err)
	}
	if vs, _, jobs, _ := e.count(); vs != 0 || jobs != 0 {
		t.Errorf("after Cleanup: %d VolumeSnapshots, %d Jobs", vs, jobs)
	}
}

// TestExportFilesystemMode: a Filesystem-mode PVC is cloned as a Block PVC
// only with the allow-volume-mode-change annotation; without the permission
// to set it the error says which.
func TestExportFilesystemMode(t *testing.T) {
	e := newEnv(t)
	e.boundPVC("files", "2Gi", corev1.PersistentVolumeFilesystem)
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
	if err != nil {
		t.Fatal(err)
	}
	if vsc.Annotations[AnnotationAllowVolumeModeChange] != "true" {
		t.Errorf("annotations %v", vsc.Annotations)
	}
	if n := len(e.fake.createdJobs()); n != 1 {
		t.Errorf("%d Jobs", n)
	}
}

// TestImportBlock: a new Block PVC and the import Job; the PVC stays.
func TestImportBlock(t *testing.T) {
	e := newEnv(t)
	args := ImportArgs{Namespace: e.ns, PVC: "restored", Operation: "restore-1", Snapshot: "0123abcd", Size: 1<<30 + 4096,
		StorageClass: testStorageClass, Job: e.jobOptions(), Timing: fastTiming()}
	// First call: the control plane dies while the Job runs.
	e.interruptWhileJobRuns(func(ctx context.Context) error {
		_, err := e.orch.Import(ctx, args)
		return err
	})
	first, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, "restored", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The rerun finds the PVC and the running Job.
	e.fake.set(func(f *fakeControllers) { f.holdJobs = false })
	res, err := e.orch.Import(e.ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(e.fake.createdJobs()); n != 1 {
		t.Errorf("%d Jobs created over both calls, want 1", n)
	}
	if res.PVC != "restored" || res.Pending {
		t.Errorf("%+v", res)
	}
	pvc, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, "restored", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *pvc.Spec.VolumeMode != corev1.PersistentVolumeBlock || pvc.Spec.Resources.Requests.Storage().Value() < 1<<30+4096 || pvc.UID != first.UID {
		t.Errorf("PVC %+v", pvc.Spec)
	}
	if vs, pvcs, jobs, _ := e.count(); vs != 0 || pvcs != 1 || jobs != 0 {
		t.Errorf("after the import: %d VolumeSnapshots, %d PVCs, %d Jobs; want the target PVC only", vs, pvcs, jobs)
	}
	job := e.fake.createdJobs()[0]
	args2 := strings.Join(job.Spec.Template.Spec.Containers[0].Args, " ")
	if !strings.HasPrefix(args2, "import --snapshot=0123abcd --target="+DevicePath) || job.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ReadOnly {
		t.Errorf("import Job args %q", args2)
	}
	// Again: the operation is done, nothing new happens; a PVC of that
	// name that another operation owns is never written.
	if _, err := e.orch.Import(e.ctx, args); err != nil {
		t.Fatal(err)
	}
	args.Operation = "restore-2"
	if _, err := e.orch.Import(e.ctx, args); !errors.Is(err, ErrConflict) {
		t.Errorf("import onto a PVC of another operation: %v", err)
	}
}

// TestImportFilesystem: block staging PVC, import, snapshot with the
// mode-change annotation, Filesystem PVC restored from it, staging removed.
func TestImportFilesystem(t *testing.T) {
	e := newEnv(t)
	e.applyManifest("../deploy/volume-mode-change.yaml")
	args := ImportArgs{Namespace: e.ns, PVC: "files", Operation: "restore-fs", Snapshot: "latest:v", Size: 1 << 30,
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
	if vs, pvcs, jobs, _ := e.count(); vs != 0 || pvcs != 1 || jobs != 0 {
		t.Errorf("after cleanup: %d VolumeSnapshots, %d PVCs, %d Jobs", vs, pvcs, jobs)
	}
}

// waitAllowed waits until RBAC lets the orchestrator do verb (the
// authorizer's cache follows new bindings within moments).
func waitAllowed(t *testing.T, e *env, verb, group, resource, ns string) {
	t.Helper()
	e.waitFor("RBAC to allow "+verb+" "+resource, func() bool {
		return e.can(orchestratorSA, verb, group, resource, "", ns, "")
	})
}
