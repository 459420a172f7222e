package csi

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/blockmover/blockmover/mover"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// Paths inside the mover container.
const (
	// DevicePath is where the volume appears in the mover container
	// (volumeDevices): the export source or the import target.
	DevicePath = "/dev/xvda"
	// TerminationLogPath is where the mover writes its JSON result; the
	// kubelet makes the file's content the container's termination message
	// (at most 4096 bytes).
	TerminationLogPath = "/dev/termination-log"
	// MaxTerminationMessage is the kubelet's limit on a termination message.
	MaxTerminationMessage = 4096
	// ContainerName of the mover in the Job's pod.
	ContainerName = "mover"
)

// Secret keys the mover Job reads from JobOptions.Secret, each into the
// environment variable of the same name. MOVER_PASSWORD is required;
// MOVER_REPOSITORY is required unless JobOptions.Repository is given; the
// keys of OptionalSecretKeys may be absent.
const (
	SecretKeyPassword   = "MOVER_PASSWORD"
	SecretKeyRepository = "MOVER_REPOSITORY"
)

// OptionalSecretKeys are the Secret keys the mover Job reads if present:
// S3 credentials and endpoint (an S3 repository may get credentials from
// the pod's identity instead, e.g. IRSA).
func OptionalSecretKeys() []string {
	return []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL"}
}

// JobOptions shape the mover Job of an export or import.
type JobOptions struct {
	// Image of the mover (required), e.g. ghcr.io/blockmover/mover:v1.
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// Secret in the operation's namespace holding MOVER_PASSWORD, and
	// MOVER_REPOSITORY and AWS_* as needed (required).
	Secret string
	// Repository, when set, is MOVER_REPOSITORY (instead of the Secret's).
	Repository string
	// CABundleKey names a key of Secret holding PEM CA certificates to
	// trust for the S3 endpoint: it is mounted at CABundlePath and passed
	// as --s3-ca-bundle.
	CABundleKey string
	// ServiceAccount the pod runs as (default: the namespace's default).
	// Its token is mounted only when the Job needs the API (CBT).
	ServiceAccount string
	// Args are added to the mover's command line (e.g. "--connections=8").
	Args []string
	// Env is added to the container's environment.
	Env []corev1.EnvVar
	// Resources of the mover container. A memory limit also sets
	// GOMEMLIMIT.
	Resources corev1.ResourceRequirements
	// NodeSelector, Tolerations and Affinity are passed to the pod as they
	// are: a clone of a zonal volume can only be attached in its zone.
	NodeSelector      map[string]string
	Tolerations       []corev1.Toleration
	Affinity          *corev1.Affinity
	PriorityClassName string
	// RunAsUser, when set, runs the mover as this non-root UID (and GID).
	// The device node of a block volume belongs to root unless the
	// container runtime hands it to the pod's user (containerd and CRI-O:
	// device_ownership_from_security_context = true); only then can a
	// non-root mover open it. Default: UID 0 with every capability dropped.
	RunAsUser *int64
	// ActiveDeadline bounds the Job's run time (default 6h).
	ActiveDeadline time.Duration
	// BackoffLimit is how many failed pods are retried (default 2). A
	// rerun resumes: packs already uploaded are reused.
	BackoffLimit *int32
	// TTLAfterFinished lets the Job controller delete a finished Job that
	// nobody cleaned up (default 24h).
	TTLAfterFinished *time.Duration
	// MetricsPort, when not 0, serves Prometheus metrics on this port
	// during the run (--metrics-addr).
	MetricsPort int32
	// Labels and Annotations are added to the Job and its pod.
	Labels, Annotations map[string]string
}

func (o *JobOptions) validate() error {
	switch {
	case o.Image == "":
		return fmt.Errorf("%w: missing Job.Image", ErrInvalidArgs)
	case o.Secret == "":
		return fmt.Errorf("%w: missing Job.Secret (the Secret with MOVER_PASSWORD)", ErrInvalidArgs)
	case o.ActiveDeadline < 0 || o.BackoffLimit != nil && *o.BackoffLimit < 0 || o.TTLAfterFinished != nil && *o.TTLAfterFinished < 0:
		return fmt.Errorf("%w: negative Job.ActiveDeadline, BackoffLimit or TTLAfterFinished", ErrInvalidArgs)
	case o.TTLAfterFinished != nil && *o.TTLAfterFinished/time.Second > math.MaxInt32:
		return fmt.Errorf("%w: Job.TTLAfterFinished %s is longer than a Job can say", ErrInvalidArgs, *o.TTLAfterFinished)
	case o.RunAsUser != nil && *o.RunAsUser <= 0:
		return fmt.Errorf("%w: Job.RunAsUser must be a non-root UID", ErrInvalidArgs)
	case o.MetricsPort < 0 || o.MetricsPort > 65535:
		return fmt.Errorf("%w: Job.MetricsPort %d", ErrInvalidArgs, o.MetricsPort)
	}
	for k := range o.Labels {
		if k == LabelOperation || k == LabelRole || k == LabelManagedBy {
			return fmt.Errorf("%w: Job.Labels may not set %s", ErrInvalidArgs, k)
		}
	}
	return nil
}

func (o *JobOptions) activeDeadline() time.Duration {
	if o.ActiveDeadline > 0 {
		return o.ActiveDeadline
	}
	return 6 * time.Hour
}

// nobodyUID is the user of the containers that open no device: the
// image's nobody (distroless's 65532).
const nobodyUID = 65532

// jobSpec is one mover Job: the command and the PVC it works on.
type jobSpec struct {
	ns, op   string
	pvc      string   // "" for a command that reads no volume (init)
	readOnly bool     // export: the clone is only read
	args     []string // mover arguments before JobOptions.Args
	cbt      *cbtSpec // an init container fetches the changed blocks
}

// cbtSpec is the init container of an incremental export.
type cbtSpec struct {
	snapshot   string // the VolumeSnapshot being exported
	baseHandle string
	size       int64
}

// Paths of an incremental export's pod.
const (
	workDir     = "/work"
	ChangesPath = workDir + "/changes.json"
	// CABundlePath is where JobOptions.CABundleKey is mounted.
	CABundlePath     = "/etc/blockmover/ca/ca.pem"
	serviceAccountMP = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// buildJob returns the mover Job for spec. See docs/kubernetes.md for the
// security context: the mover needs no capability and no privilege to open
// a block device that the kubelet put in its container, only a user the
// device node's permissions admit.
func buildJob(spec jobSpec, o *JobOptions) *batchv1.Job {
	meta := objectMeta(spec.ns, spec.op, RoleJob, o.Labels)
	for k, v := range o.Annotations {
		meta.Annotations[k] = v
	}
	podLabels := map[string]string{}
	for k, v := range meta.Labels {
		podLabels[k] = v
	}
	podAnn := map[string]string{}
	for k, v := range o.Annotations {
		podAnn[k] = v
	}

	env := []corev1.EnvVar{secretEnv(o.Secret, SecretKeyPassword, false)}
	if o.Repository != "" {
		env = append(env, corev1.EnvVar{Name: SecretKeyRepository, Value: o.Repository})
	} else {
		env = append(env, secretEnv(o.Secret, SecretKeyRepository, false))
	}
	for _, k := range OptionalSecretKeys() {
		env = append(env, secretEnv(o.Secret, k, true))
	}
	if lim, ok := o.Resources.Limits[corev1.ResourceMemory]; ok && !lim.IsZero() {
		// The Go runtime collects harder near the limit instead of being
		// OOM-killed; 90% leaves room for what is not Go heap.
		env = append(env, corev1.EnvVar{Name: "GOMEMLIMIT", Value: fmt.Sprint(lim.Value() / 10 * 9)})
	}
	env = append(env, o.Env...)

	args := append([]string{}, spec.args...)
	if spec.cbt != nil {
		args = append(args, "--changes="+ChangesPath)
	}
	args = append(args, "--json", "--log-format=json", "--termination-log="+TerminationLogPath)
	var ports []corev1.ContainerPort
	if o.MetricsPort != 0 {
		args = append(args, fmt.Sprintf("--metrics-addr=:%d", o.MetricsPort))
		ports = []corev1.ContainerPort{{Name: "metrics", ContainerPort: o.MetricsPort, Protocol: corev1.ProtocolTCP}}
		podAnn["prometheus.io/scrape"] = "true"
		podAnn["prometheus.io/port"] = fmt.Sprint(o.MetricsPort)
	}
	if o.CABundleKey != "" {
		args = append(args, "--s3-ca-bundle="+CABundlePath)
	}
	args = append(args, o.Args...)

	// Root in the container's user namespace, for the device node's owner
	// bits, but with no capability at all and no way to gain one.
	uid, gid := int64(0), int64(0)
	nonRoot := false
	switch {
	case o.RunAsUser != nil:
		uid, gid, nonRoot = *o.RunAsUser, *o.RunAsUser, true
	case spec.pvc == "":
		// No device node to open: the nobody user.
		uid, gid, nonRoot = nobodyUID, nobodyUID, true
	}
	f := false
	t := true
	sc := &corev1.SecurityContext{
		Privileged:               &f,
		AllowPrivilegeEscalation: &f,
		ReadOnlyRootFilesystem:   &t,
		RunAsUser:                &uid,
		RunAsGroup:               &gid,
		RunAsNonRoot:             &nonRoot,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	tmpLimit := resource.MustParse("64Mi")
	deadline := int64(o.activeDeadline() / time.Second)
	backoff := int32(2)
	if o.BackoffLimit != nil {
		backoff = *o.BackoffLimit
	}
	ttl := int32(24 * 3600)
	if o.TTLAfterFinished != nil {
		ttl = int32(*o.TTLAfterFinished / time.Second)
	}
	grace := int64(60)
	volumes := []corev1.Volume{
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &tmpLimit}}},
	}
	var devices []corev1.VolumeDevice
	if spec.pvc != "" {
		volumes = append([]corev1.Volume{{Name: "volume", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
			ClaimName: spec.pvc, ReadOnly: spec.readOnly}}}}, volumes...)
		devices = []corev1.VolumeDevice{{Name: "volume", DevicePath: DevicePath}}
	}
	mounts := []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}
	if o.CABundleKey != "" {
		volumes = append(volumes, corev1.Volume{Name: "ca", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: o.Secret, Items: []corev1.KeyToPath{{Key: o.CABundleKey, Path: filepath.Base(CABundlePath)}}}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "ca", MountPath: filepath.Dir(CABundlePath), ReadOnly: true})
	}
	var initContainers []corev1.Container
	if c := spec.cbt; c != nil {
		// The change list goes from the init container to the mover
		// through an emptyDir. Only the init container gets an API token
		// (projected as automounting would, but not into the mover).
		workLimit := resource.MustParse("512Mi")
		exp := int64(3600)
		volumes = append(volumes,
			corev1.Volume{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &workLimit}}},
			corev1.Volume{Name: "api-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
					Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
			}}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "work", MountPath: workDir, ReadOnly: true})
		sa := o.ServiceAccount
		initSC := sc.DeepCopy()
		nobody := int64(nobodyUID)
		initSC.RunAsUser, initSC.RunAsGroup, initSC.RunAsNonRoot = &nobody, &nobody, &t
		initContainers = []corev1.Container{{
			Name: "changes", Image: o.Image, ImagePullPolicy: o.ImagePullPolicy,
			Command: []string{"/mover"},
			Args: []string{"k8s", "changes", "--namespace=" + spec.ns, "--snapshot=" + c.snapshot,
				"--base-snapshot-handle=" + c.baseHandle, "--service-account=" + sa,
				fmt.Sprintf("--size=%d", c.size), "--out=" + ChangesPath},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "work", MountPath: workDir},
				{Name: "api-token", MountPath: serviceAccountMP, ReadOnly: true},
			},
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			SecurityContext:          initSC,
		}}
	}
	return &batchv1.Job{
		ObjectMeta: meta,
		Spec: batchv1.JobSpec{
			ActiveDeadlineSeconds:   &deadline,
			BackoffLimit:            &backoff,
			TTLSecondsAfterFinished: &ttl,
			// A failure that retrying cannot fix (PermanentExitCodes: a
			// wrong command line, no repository, wrong password, …) fails
			// the Job at once; a pod lost to a node drain or preemption is
			// not counted.
			PodFailurePolicy: podFailurePolicy(initContainers),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnn},
				Spec: corev1.PodSpec{
					RestartPolicy:                 corev1.RestartPolicyNever,
					ServiceAccountName:            o.ServiceAccount,
					AutomountServiceAccountToken:  &f,
					EnableServiceLinks:            &f,
					TerminationGracePeriodSeconds: &grace,
					NodeSelector:                  o.NodeSelector,
					Tolerations:                   o.Tolerations,
					Affinity:                      o.Affinity,
					PriorityClassName:             o.PriorityClassName,
					SecurityContext: &corev1.PodSecurityContext{
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Volumes:        volumes,
					InitContainers: initContainers,
					Containers: []corev1.Container{{
						Name:                     ContainerName,
						Image:                    o.Image,
						ImagePullPolicy:          o.ImagePullPolicy,
						Command:                  []string{"/mover"},
						Args:                     args,
						Env:                      env,
						Ports:                    ports,
						Resources:                o.Resources,
						VolumeDevices:            devices,
						VolumeMounts:             mounts,
						TerminationMessagePath:   TerminationLogPath,
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						SecurityContext:          sc,
					}},
				},
			},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// PermanentExitCodes returns the mover's exit codes that retrying cannot
// fix, in ascending order: 2 a wrong command line, 3 init found a
// repository, 10 no repository, 11 repository busy, 12 cannot unlock
// (wrong or no password, damaged key files), 13 the storage refuses
// (access denied, no bucket), 14 no such snapshot or volume, 15 unsuitable
// source or target, 16 a repository newer than the mover. The Job's
// podFailurePolicy fails the Job at once on them; every other code (1
// failure or a bug, 130 SIGINT, 143 SIGTERM) is retried up to the
// backoff limit. The mover's `--help` lists the same table.
func PermanentExitCodes() []int32 { return []int32{2, 3, 10, 11, 12, 13, 14, 15, 16} }

func secretEnv(secret, key string, optional bool) corev1.EnvVar {
	return corev1.EnvVar{Name: key, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key, Optional: &optional}}}
}

// Result is the JSON object the mover writes to its termination log: the
// object `mover export --json` or `mover import --json` prints, or
// {"error": "...", "reason": "...", "retryable": false, "exit_code": 12}
// when the command failed.
type Result struct {
	// The report's fields, defined once in package mover; an export
	// leaves the import figures zero and the other way round.
	mover.ReportCommon
	mover.ExportFigures
	mover.ImportFigures
	// Error is set when the mover failed.
	Error string `json:"error,omitempty"`
	// Reason is a stable word for the failure (WrongPassword,
	// NotRepository, SnapshotNotFound, Usage, Interrupted, Failed, …);
	// Retryable says whether running the same command again may succeed;
	// ExitCode is the mover's exit code. Empty, false and 0 from a mover
	// older than these fields.
	Reason    string `json:"reason,omitempty"`
	Retryable bool   `json:"retryable,omitempty"`
	ExitCode  int    `json:"exit_code,omitempty"`
	// Raw is the message as the mover wrote it.
	Raw json.RawMessage `json:"-"`
	// Node is where the mover's pod ran ("" when it is not known: a
	// result parsed from a message alone).
	Node string `json:"-"`
}

// ParseResult parses a termination message.
func ParseResult(msg string) (*Result, error) {
	var r Result
	if err := json.Unmarshal([]byte(msg), &r); err != nil {
		return nil, fmt.Errorf("termination message is not the mover's JSON result: %w", err)
	}
	r.Raw = json.RawMessage(msg)
	return &r, nil
}

// JobFailedError is returned when the mover Job failed. Message is the
// mover's own error from its termination message, or what the Job
// controller said.
type JobFailedError struct {
	Namespace, Job string
	Reason         string // the Job's Failed condition reason, e.g. BackoffLimitExceeded
	Message        string
	// MoverReason, Retryable and ExitCode are the mover's own (Result),
	// when its termination message says them.
	MoverReason string
	Retryable   bool
	ExitCode    int
}

func (e *JobFailedError) Error() string {
	s := fmt.Sprintf("mover Job %s/%s failed", e.Namespace, e.Job)
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func jobCondition(job *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		if c := &job.Status.Conditions[i]; c.Type == t && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

// WaitJob waits until the Job completes and returns the mover's result
// from the termination message of its succeeded pod. A failed Job gives a
// *JobFailedError carrying the mover's error; a Job still running after
// timeout an error wrapping ErrTimeout. Transient API errors (IsTransient:
// the API server restarting, overloaded) are retried with backoff until
// the timeout, so that the wait outlives a short outage of the control
// plane; any other API error (Forbidden, the Job or its namespace not
// found) ends it at once.
func (c *Clients) WaitJob(ctx context.Context, ns, name string, interval, timeout time.Duration) (*Result, error) {
	var res *Result
	err := poll(ctx, interval, timeout, fmt.Sprintf("mover Job %s/%s not finished", ns, name), func(ctx context.Context) (bool, string, error) {
		job, err := c.Kube.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("mover Job %s/%s: %w", ns, name, explain(err))
		}
		if jobCondition(job, batchv1.JobComplete) == nil && jobCondition(job, batchv1.JobFailed) == nil {
			if err := c.podsNotCreated(ctx, job); err != nil {
				return false, "", err
			}
			return false, fmt.Sprintf("active %d, succeeded %d, failed %d", job.Status.Active, job.Status.Succeeded, job.Status.Failed), nil
		}
		res, err = c.jobOutcome(ctx, job)
		return err == nil, "", err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// jobOutcome returns the result of a finished Job: the mover's result of
// a succeeded one, a *JobFailedError for a failed one. A transient error
// reading its pods is returned as it is, for the caller to retry.
func (c *Clients) jobOutcome(ctx context.Context, job *batchv1.Job) (*Result, error) {
	ns, name := job.Namespace, job.Name
	if fc := jobCondition(job, batchv1.JobFailed); fc != nil {
		msg, _, err := c.lastTerminationMessage(ctx, job, false)
		if IsTransient(err) {
			return nil, err
		}
		jf := &JobFailedError{Namespace: ns, Job: name, Reason: fc.Reason, Message: fc.Message}
		if msg != "" {
			if r, err := ParseResult(msg); err == nil && r.Error != "" {
				jf.Message = r.Error
				jf.MoverReason, jf.Retryable, jf.ExitCode = r.Reason, r.Retryable, r.ExitCode
			} else {
				jf.Message = strings.TrimSpace(msg)
			}
		}
		return nil, jf
	}
	msg, node, err := c.lastTerminationMessage(ctx, job, true)
	if err != nil {
		return nil, err
	}
	if msg == "" {
		return nil, fmt.Errorf("mover Job %s/%s succeeded but its pod left no termination message (was the pod deleted?)", ns, name)
	}
	res, err := ParseResult(msg)
	if err != nil {
		return nil, err
	}
	res.Node = node
	return res, nil
}

// lastTerminationMessage returns the termination message of the mover
// container of the Job's newest pod that succeeded (or failed). Of a failed
// pod whose init container failed (the CBT step, mover k8s changes), it is
// that container's message: the kubelet then leaves the mover container
// waiting, with none.
func (c *Clients) lastTerminationMessage(ctx context.Context, job *batchv1.Job, succeeded bool) (msg, node string, err error) {
	sel, err := metav1.LabelSelectorAsSelector(job.Spec.Selector)
	if err != nil {
		return "", "", fmt.Errorf("mover Job %s/%s: selector: %w", job.Namespace, job.Name, err)
	}
	pods, err := c.Kube.CoreV1().Pods(job.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return "", "", fmt.Errorf("pods of mover Job %s/%s: %w", job.Namespace, job.Name, explain(err))
	}
	items := pods.Items
	sort.Slice(items, func(i, j int) bool { return items[j].CreationTimestamp.Before(&items[i].CreationTimestamp) })
	want := corev1.PodFailed
	if succeeded {
		want = corev1.PodSucceeded
	}
	for _, p := range items {
		if p.Status.Phase != want {
			continue
		}
		if msg := failedInit(&p); !succeeded && msg != "" {
			return msg, p.Spec.NodeName, nil
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == ContainerName && cs.State.Terminated != nil {
				return cs.State.Terminated.Message, p.Spec.NodeName, nil
			}
		}
	}
	return "", "", nil
}

// failedInit describes the first init container of p that failed, or is "".
func failedInit(p *corev1.Pod) string {
	for _, cs := range p.Status.InitContainerStatuses {
		t := cs.State.Terminated
		if t == nil {
			t = cs.LastTerminationState.Terminated
		}
		if t == nil || t.ExitCode == 0 {
			continue
		}
		if m := strings.TrimSpace(t.Message); m != "" {
			return fmt.Sprintf("init container %s: %s", cs.Name, m)
		}
		return fmt.Sprintf("init container %s exited %d (%s)", cs.Name, t.ExitCode, t.Reason)
	}
	return ""
}

// podFailurePolicy fails the Job at once when the mover container, or an
// init container (a mover too: the CBT step), exits with a code that no
// retry can change (PermanentExitCodes), and does not count pods lost to a
// node drain or preemption.
func podFailurePolicy(initContainers []corev1.Container) *batchv1.PodFailurePolicy {
	permanent := func(container string) batchv1.PodFailurePolicyRule {
		return batchv1.PodFailurePolicyRule{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
			ContainerName: ptr(container), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: PermanentExitCodes()}}
	}
	rules := []batchv1.PodFailurePolicyRule{permanent(ContainerName)}
	for _, c := range initContainers {
		rules = append(rules, permanent(c.Name))
	}
	rules = append(rules, batchv1.PodFailurePolicyRule{Action: batchv1.PodFailurePolicyActionIgnore, OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
		{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}}})
	return &batchv1.PodFailurePolicy{Rules: rules}
}

// createGrace is how long a Job may go without a pod while the Job
// controller reports that it cannot create one (FailedCreate events)
// before WaitJob gives up: a ServiceAccount or PriorityClass that does not
// exist, an admission webhook or a quota refusing the pod.
const createGrace = 30 * time.Second

// podsNotCreated returns a *JobFailedError with the Job controller's
// reason when job has had no pod for createGrace and its events say pod
// creation fails; nil otherwise (also when the events cannot be read).
func (c *Clients) podsNotCreated(ctx context.Context, job *batchv1.Job) error {
	if job.Status.Active > 0 || job.Status.Succeeded > 0 || job.Status.Failed > 0 ||
		time.Since(job.CreationTimestamp.Time) < createGrace {
		return nil
	}
	evs, err := c.Kube.CoreV1().Events(job.Namespace).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
		"involvedObject.kind": "Job", "involvedObject.name": job.Name, "involvedObject.uid": string(job.UID), "reason": "FailedCreate",
	}.String()})
	if err != nil || len(evs.Items) == 0 {
		return nil
	}
	last := evs.Items[0]
	for _, ev := range evs.Items[1:] {
		if ev.LastTimestamp.After(last.LastTimestamp.Time) {
			last = ev
		}
	}
	return &JobFailedError{Namespace: job.Namespace, Job: job.Name, Reason: "FailedCreate",
		Message: "no pod could be created: " + strings.TrimSpace(last.Message)}
}
