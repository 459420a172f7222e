package csi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/internal/testutil"
	"github.com/kubernetes-csi/external-snapshot-metadata/pkg/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	moverOnce sync.Once
	moverBin  string
	moverErr  error
)

// buildMover builds cmd/mover once per test binary.
func buildMover(t *testing.T) string {
	t.Helper()
	moverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "blockmover-bin-")
		if err != nil {
			moverErr = err
			return
		}
		moverBin = filepath.Join(dir, "mover")
		out, err := exec.Command("go", "build", "-o", moverBin, "../cmd/mover").CombinedOutput()
		if err != nil {
			moverErr = errors.New(string(out))
		}
	})
	if moverErr != nil {
		t.Fatalf("building mover: %v", moverErr)
	}
	return moverBin
}

// localKubelet runs a mover pod's container as a local process: the
// container's command and arguments, its environment with secretKeyRefs
// resolved from the real Secret, the PVC's "device" (a loop device) at the
// container's volumeDevices path, and the termination log at the
// container's terminationMessagePath. Paths are mapped, nothing else.
type localKubelet struct {
	e       *env
	bin     string
	mu      sync.Mutex
	devices map[string]string // PVC name → loop device
	stderr  []string
}

func (k *localKubelet) device(pvc string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.devices[pvc]
}

// provisioned gives a new PVC a loop device: a copy of the source
// device for a clone of a snapshot (the CSI driver's restore), an empty
// one otherwise.
func (k *localKubelet) provisioned(pvc *corev1.PersistentVolumeClaim) {
	size := pvc.Spec.Resources.Requests.Storage().Value()
	var src string
	if ds := pvc.Spec.DataSource; ds != nil && ds.Kind == "VolumeSnapshot" {
		vs, err := k.e.admin.Snapshot.SnapshotV1().VolumeSnapshots(k.e.ns).Get(k.e.ctx, ds.Name, metav1.GetOptions{})
		if err != nil {
			k.e.t.Errorf("clone: %v", err)
			return
		}
		src = k.device(*vs.Spec.Source.PersistentVolumeClaimName)
	}
	dev := testutil.LoopDevice(k.e.t, size)
	if src != "" {
		b, err := os.ReadFile(src)
		if err != nil {
			k.e.t.Errorf("clone: %v", err)
			return
		}
		writeAt(k.e.t, dev, 0, b)
	}
	k.mu.Lock()
	k.devices[pvc.Name] = dev
	k.mu.Unlock()
}

func (k *localKubelet) run(job *batchv1.Job, pod *corev1.Pod) (int32, string) {
	t := k.e.t
	c := pod.Spec.Containers[0]
	if len(c.VolumeDevices) != 1 || len(pod.Spec.Volumes) == 0 || pod.Spec.Volumes[0].Name != c.VolumeDevices[0].Name {
		t.Errorf("pod devices %+v volumes %+v", c.VolumeDevices, pod.Spec.Volumes)
		return 1, ""
	}
	devPath := c.VolumeDevices[0].DevicePath
	claim := pod.Spec.Volumes[0].PersistentVolumeClaim
	dev := k.device(claim.ClaimName)
	if dev == "" {
		return -1, "" // the kubelet waits until the volume is there
	}
	if claim.ReadOnly {
		// The kubelet attaches a readOnly claim read-only: so does this
		// one, and a mover that opened the device for writing would fail.
		dev = testutil.ReadOnlyLoop(t, dev)
	}
	termLog := filepath.Join(t.TempDir(), "termination-log")
	os.WriteFile(termLog, nil, 0o644)
	work := t.TempDir() // the "work" emptyDir, shared by the pod's containers
	mapPath := func(s string) string {
		s = strings.ReplaceAll(s, devPath, dev)
		s = strings.ReplaceAll(s, workDir+"/", work+"/")
		return strings.ReplaceAll(s, c.TerminationMessagePath, termLog)
	}
	for _, ic := range pod.Spec.InitContainers {
		if code, msg := k.runInit(pod, ic, mapPath); code != 0 {
			return code, msg
		}
	}
	if c.Command[0] != "/mover" {
		t.Errorf("command %v", c.Command)
	}
	var args []string
	for _, a := range c.Args {
		args = append(args, mapPath(a))
	}
	environ := []string{"PATH=" + os.Getenv("PATH")}
	for _, v := range c.Env {
		val := v.Value
		if r := v.ValueFrom; r != nil {
			s, ok := k.e.secretValue(r.SecretKeyRef.Name, r.SecretKeyRef.Key)
			if !ok {
				if r.SecretKeyRef.Optional == nil || !*r.SecretKeyRef.Optional {
					t.Errorf("required key %s missing from Secret %s", r.SecretKeyRef.Key, r.SecretKeyRef.Name)
					return 1, ""
				}
				continue
			}
			val = s
		}
		environ = append(environ, v.Name+"="+val)
	}
	cmd := exec.CommandContext(k.e.ctx, k.bin, args...)
	cmd.Env = environ
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	k.mu.Lock()
	k.stderr = append(k.stderr, stderr.String())
	k.mu.Unlock()
	code := int32(0)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = int32(ee.ExitCode())
	} else if err != nil {
		t.Errorf("running mover: %v", err)
		return 1, ""
	}
	msg, _ := os.ReadFile(termLog)
	t.Logf("mover %s: exit %d, termination message %s", strings.Join(args, " "), code, msg)
	return code, string(msg)
}

// TestJobRunsLocally: the generated Jobs' container command, environment
// and device path, run as local processes against loop devices, export a
// volume and import it back byte for byte (the spec and the binary agree);
// then an incremental export whose init container gets the changed blocks
// from a SnapshotMetadata service, and its import.
func TestJobRunsLocally(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	e := newEnv(t)
	bin := buildMover(t)
	k := &localKubelet{e: e, bin: bin, devices: map[string]string{}}
	e.fake.set(func(f *fakeControllers) { f.provisioned = k.provisioned; f.runPod = k.run })

	repoDir := filepath.Join(t.TempDir(), "repo")
	_, err := e.admin.Kube.CoreV1().Secrets(e.ns).Create(e.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "local"},
		StringData: map[string]string{"MOVER_PASSWORD": "pod-secret", "MOVER_REPOSITORY": repoDir}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	init := exec.Command(bin, "init", "--repo", repoDir)
	init.Env = append(os.Environ(), "MOVER_PASSWORD=pod-secret")
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("init: %v: %s", err, out)
	}

	// The source volume: 48 MiB of random, repeated and zero data.
	const size = 48 << 20
	e.boundPVC("data", "48Mi", corev1.PersistentVolumeBlock)
	e.waitFor("the source PVC's device", func() bool { return k.device("data") != "" })
	src := k.device("data")
	if fi, err := os.Stat(src); err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Fatalf("the source volume %s is not a loop device (%v)", src, err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, size)
	for i := 0; i < size; i += 1 << 20 {
		switch (i >> 20) % 4 {
		case 0, 1:
			for j := i; j < i+1<<20; j += 8 {
				v := rng.Uint64()
				for b := range 8 {
					data[j+b] = byte(v >> (8 * b))
				}
			}
		case 2:
			copy(data[i:i+1<<20], data[0:1<<20])
		}
	}
	writeAt(t, src, 0, data)

	job := e.jobOptions()
	job.Secret = "local"
	args := ExportArgs{Namespace: e.ns, PVC: "data", Operation: "local", Job: job, Timing: fastTiming(), Volume: "data",
		Tags: map[string]string{"k8s": "yes"}}
	res, err := e.orch.Export(e.ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != size || res.Volume != "data" || len(res.Snapshot) < 16 || res.NewBytes == 0 {
		t.Fatalf("export result %s", res.Raw)
	}
	for _, l := range strings.Split(strings.TrimSpace(k.stderr[0]), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("stderr line in a pod is not JSON: %q", l)
		}
	}

	imp, err := e.orch.Import(e.ctx, ImportArgs{Namespace: e.ns, PVC: "restored", Operation: "local-back", Snapshot: res.Snapshot,
		Size: res.Size, StorageClass: testStorageClass, Job: job, Timing: fastTiming()})
	if err != nil {
		t.Fatal(err)
	}
	if imp.Size != size || imp.Snapshot != res.Snapshot {
		t.Errorf("import result %s", imp.Raw)
	}
	got, err := os.ReadFile(k.device("restored"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:size], data) {
		t.Fatal("the restored device differs from the source")
	}

	incrementalStep(t, e, k, job, res, src, data)

	// A wrong password: the Job fails at once (exit 12 is permanent) and the
	// mover's own error, reason and retryable flag surface.
	_, err = e.admin.Kube.CoreV1().Secrets(e.ns).Create(e.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "wrong"},
		StringData: map[string]string{"MOVER_PASSWORD": "nope", "MOVER_REPOSITORY": repoDir}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	args.Job.Secret, args.Operation = "wrong", "wrong-pw"
	_, err = e.orch.Export(context.Background(), args)
	var jf *JobFailedError
	if !errors.As(err, &jf) || !strings.Contains(strings.ToLower(jf.Message), "password") ||
		jf.Reason != "PodFailurePolicy" || jf.MoverReason != "WrongPassword" || jf.Retryable || jf.ExitCode != 12 {
		t.Fatalf("wrong password: %v (%+v): want the Job failed at once by its podFailurePolicy, reason WrongPassword, not retryable, exit 12", err, jf)
	}
	t.Log(err)
}

// runInit runs an init container. Its projected ServiceAccount token
// becomes a kubeconfig with a token of the pod's ServiceAccount for the API
// server (what the kubelet projects), handed over as $KUBECONFIG.
func (k *localKubelet) runInit(pod *corev1.Pod, c corev1.Container, mapPath func(string) string) (int32, string) {
	t := k.e.t
	environ := []string{"PATH=" + os.Getenv("PATH")}
	for _, m := range c.VolumeMounts {
		if m.MountPath != serviceAccountMP {
			continue
		}
		tok, _, err := k.e.admin.RequestToken(k.e.ctx, pod.Namespace, pod.Spec.ServiceAccountName, "https://kubernetes.default.svc.cluster.local", time.Hour)
		if err != nil {
			t.Errorf("projecting the token: %v", err)
			return 1, ""
		}
		kc := writeKubeconfig(t, cluster.Config.Host, tok, pod.Namespace)
		environ = append(environ, "KUBECONFIG="+kc)
	}
	var args []string
	for _, a := range c.Args {
		args = append(args, mapPath(a))
	}
	cmd := exec.CommandContext(k.e.ctx, k.bin, args...)
	cmd.Env = environ
	out, err := cmd.CombinedOutput()
	t.Logf("init container %s: mover %s: %v: %s", c.Name, strings.Join(args, " "), err, out)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return int32(ee.ExitCode()), string(out)
	}
	return 0, ""
}

// deltaServer is a SnapshotMetadata service that authenticates callers as
// the sidecar does (TokenReview with its audience, then a
// SubjectAccessReview for getting the VolumeSnapshots) and computes deltas
// of real devices.
type deltaServer struct {
	*metadataServer
	e        *env
	audience string
}

func (d deltaServer) authorize(token, ns string) error {
	tr, err := d.e.admin.Kube.AuthenticationV1().TokenReviews().Create(d.e.ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{d.audience}}}, metav1.CreateOptions{})
	if err != nil || !tr.Status.Authenticated {
		return status.Error(codes.Unauthenticated, "invalid security token")
	}
	sar, err := d.e.admin.Kube.AuthorizationV1().SubjectAccessReviews().Create(d.e.ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{User: tr.Status.User.Username, Groups: tr.Status.User.Groups,
			ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: "get", Group: "snapshot.storage.k8s.io", Resource: "volumesnapshots"}}},
		metav1.CreateOptions{})
	if err != nil || !sar.Status.Allowed {
		return status.Errorf(codes.PermissionDenied, "%s may not get volumesnapshots in %s", tr.Status.User.Username, ns)
	}
	return nil
}

func (d deltaServer) GetMetadataDelta(req *api.GetMetadataDeltaRequest, stream grpc.ServerStreamingServer[api.GetMetadataDeltaResponse]) error {
	if err := d.authorize(req.SecurityToken, req.Namespace); err != nil {
		return err
	}
	base, err := d.open(req.BaseSnapshotId)
	if err != nil {
		return err
	}
	defer base.Close()
	target, err := d.open(req.TargetSnapshotName)
	if err != nil {
		return err
	}
	defer target.Close()
	changed, err := changes.Diff(stream.Context(), base, target, changes.DiffOptions{BlockSize: 64 << 10})
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return d.send(stream.Context(), changed, target.Size(), req.StartingOffset, req.MaxResults, func(b []*api.BlockMetadata) error {
		return stream.Send(&api.GetMetadataDeltaResponse{BlockMetadataType: api.BlockMetadataType_VARIABLE_LENGTH, VolumeCapacityBytes: target.Size(), BlockMetadata: b})
	})
}

// incrementalStep: an incremental export whose change list comes from the
// Job's init container (mover k8s changes, as the Job's ServiceAccount,
// against a SnapshotMetadata service over TLS), then an import of it.
func incrementalStep(t *testing.T, e *env, k *localKubelet, job JobOptions, base *ExportResult, src string, data []byte) {
	const audience = "blockmover-cbt-test"
	d := deltaServer{metadataServer: &metadataServer{devices: map[string]string{}}, e: e, audience: audience}
	e.serveSnapshotMetadata(d, audience)
	// The driver keeps the base snapshot; the volume changes: 1 MiB
	// rewritten, 1 MiB zeroed, 4 KiB somewhere else.
	baseFile := filepath.Join(t.TempDir(), "base-snapshot")
	if err := os.WriteFile(baseFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	data = bytes.Clone(data)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 5 << 20; i < 6<<20; i++ {
		data[i] = byte(rng.Uint32())
	}
	clear(data[20<<20 : 21<<20])
	copy(data[33<<20+12345:], bytes.Repeat([]byte("changed!"), 512))
	writeAt(t, src, 0, data)
	d.devices[base.SnapshotHandle] = baseFile
	d.devices[ObjectName("local-incr")] = src

	res, err := e.orch.Export(e.ctx, ExportArgs{Namespace: e.ns, PVC: "data", Operation: "local-incr", Job: job, Timing: fastTiming(),
		Volume: "data", Base: base.Snapshot, ChangedBlocks: &ChangedBlocks{BaseSnapshotHandle: base.SnapshotHandle}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Parent != base.Snapshot || res.ReusedBytes == 0 || res.ReadBytes >= int64(len(data))/2 {
		t.Errorf("incremental export read %d of %d bytes, reused %d, parent %s", res.ReadBytes, len(data), res.ReusedBytes, res.Parent)
	}
	imp, err := e.orch.Import(e.ctx, ImportArgs{Namespace: e.ns, PVC: "restored-incr", Operation: "local-incr-back", Snapshot: res.Snapshot,
		Size: res.Size, StorageClass: testStorageClass, Job: job, Timing: fastTiming()})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(k.device(imp.PVC))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(data)], data) {
		t.Fatal("the volume restored from the incremental export differs")
	}
}
