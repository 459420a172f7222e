package csi

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeControllers play, with the administrator's client and nothing more
// than status updates, the controllers a real cluster runs:
//
//   - snapshot: the snapshot-controller and the CSI driver's
//     external-snapshotter sidecar (VolumeSnapshotContent, readyToUse);
//   - provision: the external-provisioner and the PV controller (a
//     PersistentVolume for a new PVC, both bound);
//   - jobs: the Job controller, the scheduler and the kubelet (one pod per
//     Job, the container's exit and termination message, the Job's
//     conditions).
//
// Each reconciles every 20 ms until the test ends. Hooks decide what the
// real component would have done.
type fakeControllers struct {
	e  *env
	mu sync.Mutex
	// snapshotState says how a VolumeSnapshot fares: ready, or an error
	// message, or neither (never ready).
	snapshotState func(vs *snapv1.VolumeSnapshot) (ready bool, errMsg string)
	// provisioned is told about each PVC bound to a new volume.
	provisioned func(pvc *corev1.PersistentVolumeClaim)
	// runPod is the container's run: exit code and termination message
	// (-1: cannot start yet, ask again).
	runPod func(job *batchv1.Job, pod *corev1.Pod) (int32, string)
	// holdJobs keeps pods running (not finished) while true.
	holdJobs bool
	// jobs remembers each Job the controller saw, as created.
	jobs     []*batchv1.Job
	podsMade map[string]bool
}

func newFakeControllers(e *env) *fakeControllers {
	f := &fakeControllers{e: e, podsMade: map[string]bool{},
		snapshotState: func(*snapv1.VolumeSnapshot) (bool, string) { return true, "" },
		runPod: func(*batchv1.Job, *corev1.Pod) (int32, string) {
			return 0, `{"snapshot":"0123abcd","volume":"v","size":1073741824,"read_bytes":1,"new_bytes":2,"stored_bytes":3,"seconds":1.5}`
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			f.reconcile(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return f
}

func (f *fakeControllers) set(fn func(f *fakeControllers)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeControllers) createdJobs() []*batchv1.Job {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*batchv1.Job(nil), f.jobs...)
}

func (f *fakeControllers) reconcile(ctx context.Context) {
	f.snapshots(ctx)
	f.provision(ctx)
	f.runJobs(ctx)
}

// snapshots stands for the snapshot-controller and the external-snapshotter.
func (f *fakeControllers) snapshots(ctx context.Context) {
	e := f.e
	list, err := e.admin.Snapshot.SnapshotV1().VolumeSnapshots(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for i := range list.Items {
		vs := &list.Items[i]
		if vs.DeletionTimestamp != nil || vs.Status != nil && vs.Status.ReadyToUse != nil && *vs.Status.ReadyToUse {
			continue
		}
		f.mu.Lock()
		ready, msg := f.snapshotState(vs)
		f.mu.Unlock()
		now := metav1.Now()
		if msg != "" {
			vs.Status = &snapv1.VolumeSnapshotStatus{ReadyToUse: ptr(false), Error: &snapv1.VolumeSnapshotError{Time: &now, Message: &msg}}
			e.admin.Snapshot.SnapshotV1().VolumeSnapshots(e.ns).UpdateStatus(ctx, vs, metav1.UpdateOptions{})
			continue
		}
		if !ready {
			continue
		}
		pvc, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, *vs.Spec.Source.PersistentVolumeClaimName, metav1.GetOptions{})
		if err != nil {
			continue
		}
		size := pvc.Status.Capacity[corev1.ResourceStorage]
		content := "snapcontent-" + string(vs.UID)
		vsc := &snapv1.VolumeSnapshotContent{
			ObjectMeta: metav1.ObjectMeta{Name: content},
			Spec: snapv1.VolumeSnapshotContentSpec{
				VolumeSnapshotRef: corev1.ObjectReference{Kind: "VolumeSnapshot", APIVersion: "snapshot.storage.k8s.io/v1", Namespace: e.ns, Name: vs.Name, UID: vs.UID},
				DeletionPolicy:    snapv1.VolumeSnapshotContentDelete, Driver: testDriver,
				VolumeSnapshotClassName: vs.Spec.VolumeSnapshotClassName,
				Source:                  snapv1.VolumeSnapshotContentSource{VolumeHandle: ptr("vol-" + string(pvc.UID))},
				SourceVolumeMode:        pvc.Spec.VolumeMode,
			},
		}
		vsc, err = e.admin.Snapshot.SnapshotV1().VolumeSnapshotContents().Create(ctx, vsc, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			vsc, err = e.admin.Snapshot.SnapshotV1().VolumeSnapshotContents().Get(ctx, content, metav1.GetOptions{})
		}
		if err != nil {
			e.t.Logf("fake snapshot controller: %v", err)
			continue
		}
		n := time.Now().UnixNano()
		vsc.Status = &snapv1.VolumeSnapshotContentStatus{SnapshotHandle: ptr("snap-" + string(vs.UID)), ReadyToUse: ptr(true),
			RestoreSize: ptr(size.Value()), CreationTime: &n}
		if _, err := e.admin.Snapshot.SnapshotV1().VolumeSnapshotContents().UpdateStatus(ctx, vsc, metav1.UpdateOptions{}); err != nil {
			e.t.Logf("fake snapshot controller: %v", err)
			continue
		}
		vs.Status = &snapv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: &content, ReadyToUse: ptr(true), RestoreSize: &size, CreationTime: &now}
		if _, err := e.admin.Snapshot.SnapshotV1().VolumeSnapshots(e.ns).UpdateStatus(ctx, vs, metav1.UpdateOptions{}); err != nil {
			e.t.Logf("fake snapshot controller: %v", err)
		}
	}
}

// provision stands for the external-provisioner and the PV controller:
// every pending PVC of the test class gets a volume and is bound.
func (f *fakeControllers) provision(ctx context.Context) {
	e := f.e
	list, err := e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for i := range list.Items {
		pvc := &list.Items[i]
		if pvc.Status.Phase == corev1.ClaimBound || pvc.DeletionTimestamp != nil || pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != testStorageClass {
			continue
		}
		if pvc.Spec.DataSource != nil && pvc.Spec.DataSource.Kind == "VolumeSnapshot" {
			// The external-provisioner refuses a mode change the
			// VolumeSnapshotContent does not allow (KEP-3141).
			vs, err := e.admin.Snapshot.SnapshotV1().VolumeSnapshots(e.ns).Get(ctx, pvc.Spec.DataSource.Name, metav1.GetOptions{})
			if err != nil || vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil {
				continue
			}
			vsc, err := e.admin.Snapshot.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
			if err != nil {
				continue
			}
			if vsc.Spec.SourceVolumeMode != nil && pvc.Spec.VolumeMode != nil && *vsc.Spec.SourceVolumeMode != *pvc.Spec.VolumeMode &&
				vsc.Annotations[AnnotationAllowVolumeModeChange] != "true" {
				continue
			}
		}
		f.bind(pvc)
	}
}

// bind makes a PersistentVolume for pvc and binds both.
func (f *fakeControllers) bind(pvc *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	e := f.e
	ctx := e.ctx
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	pvName := "pv-" + string(pvc.UID)
	_, err := e.admin.Kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes: pvc.Spec.AccessModes, VolumeMode: pvc.Spec.VolumeMode, StorageClassName: testStorageClass,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: e.ns, Name: pvc.Name, UID: pvc.UID},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: testDriver, VolumeHandle: "vol-" + string(pvc.UID)}},
		},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Errorf("fake provisioner: %v", err)
		return pvc
	}
	pvc.Spec.VolumeName = pvName
	pvc, err = e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).Update(ctx, pvc, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return pvc // deleted or changed meanwhile: the next round sees it
	}
	if err != nil {
		e.t.Errorf("fake PV controller: %v", err)
		return pvc
	}
	pvc.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound, AccessModes: pvc.Spec.AccessModes,
		Capacity: corev1.ResourceList{corev1.ResourceStorage: size}}
	pvc, err = e.admin.Kube.CoreV1().PersistentVolumeClaims(e.ns).UpdateStatus(ctx, pvc, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return pvc
	}
	if err != nil {
		e.t.Errorf("fake PV controller: %v", err)
		return pvc
	}
	f.mu.Lock()
	hook := f.provisioned
	f.mu.Unlock()
	if hook != nil {
		hook(pvc)
	}
	return pvc
}

// runJobs stands for the Job controller, the scheduler and the kubelet.
func (f *fakeControllers) runJobs(ctx context.Context) {
	e := f.e
	list, err := e.admin.Kube.BatchV1().Jobs(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for i := range list.Items {
		job := &list.Items[i]
		if job.DeletionTimestamp != nil || jobCond(job, batchv1.JobComplete) || jobCond(job, batchv1.JobFailed) {
			continue
		}
		f.mu.Lock()
		hold, made := f.holdJobs, f.podsMade[string(job.UID)]
		if !made {
			f.jobs = append(f.jobs, job.DeepCopy())
			f.podsMade[string(job.UID)] = true
		}
		run := f.runPod
		f.mu.Unlock()
		podName := job.Name + "-x" + string(job.UID)[:5]
		if !made {
			// Job controller: one pod from the template; scheduler: a node.
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: e.ns, Labels: job.Spec.Template.Labels, Annotations: job.Spec.Template.Annotations,
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr(true)}}},
				Spec: *job.Spec.Template.Spec.DeepCopy(),
			}
			pod.Spec.NodeName = "node-1"
			if _, err := e.admin.Kube.CoreV1().Pods(e.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				e.t.Errorf("fake job controller: creating pod: %v", err)
				continue
			}
		}
		if hold {
			continue
		}
		pod, err := e.admin.Kube.CoreV1().Pods(e.ns).Get(ctx, podName, metav1.GetOptions{})
		if err != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		// Kubelet: run the container, record its exit and message. Exit
		// code -1: not yet (the volume is not attached).
		code, msg := run(job, pod)
		if code == -1 {
			continue
		}
		start := metav1.Now()
		phase := corev1.PodSucceeded
		if code != 0 {
			phase = corev1.PodFailed
		}
		pod.Status = corev1.PodStatus{Phase: phase, StartTime: &start, ContainerStatuses: []corev1.ContainerStatus{{
			Name: ContainerName, Image: pod.Spec.Containers[0].Image, ImageID: "sha256:0",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Message: msg, StartedAt: start, FinishedAt: metav1.Now(), Reason: map[bool]string{true: "Completed", false: "Error"}[code == 0]}},
		}}}
		if _, err := e.admin.Kube.CoreV1().Pods(e.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			if !apierrors.IsNotFound(err) {
				e.t.Errorf("fake kubelet: %v", err)
			}
			continue
		}
		// Job controller: the outcome (a failed pod is taken as the last
		// the backoff limit allows).
		now := metav1.Now()
		job.Status.StartTime = &start
		if code == 0 {
			job.Status.Succeeded = 1
			job.Status.CompletionTime = &now
			job.Status.Conditions = append(job.Status.Conditions,
				batchv1.JobCondition{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, Reason: "CompletionsReached", Message: "Reached expected number of succeeded pods", LastProbeTime: now, LastTransitionTime: now},
				batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, Reason: "CompletionsReached", Message: "Reached expected number of succeeded pods", LastProbeTime: now, LastTransitionTime: now})
		} else {
			// A FailJob rule of the podFailurePolicy that matches the
			// exit code fails the Job at once, as the real controller does.
			reason, message := "BackoffLimitExceeded", "Job has reached the specified backoff limit"
			if pfp := job.Spec.PodFailurePolicy; pfp != nil {
				for i, r := range pfp.Rules {
					if oe := r.OnExitCodes; r.Action == batchv1.PodFailurePolicyActionFailJob && oe != nil &&
						oe.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn && slices.Contains(oe.Values, code) {
						reason = "PodFailurePolicy"
						message = fmt.Sprintf("Container %s for pod %s/%s failed with exit code %d matching FailJob rule at index %d", ContainerName, pod.Namespace, pod.Name, code, i)
						break
					}
				}
			}
			job.Status.Failed = 1
			job.Status.Conditions = append(job.Status.Conditions,
				batchv1.JobCondition{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: reason, Message: message, LastProbeTime: now, LastTransitionTime: now},
				batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: reason, Message: message, LastProbeTime: now, LastTransitionTime: now})
		}
		if _, err := e.admin.Kube.BatchV1().Jobs(e.ns).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			e.t.Errorf("fake job controller: %v", err)
		}
	}
}
