package testcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockmover/blockmover/csi/internal/testdriver"
	"github.com/blockmover/blockmover/deploy"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"google.golang.org/grpc/codes"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// startNode starts a cluster with the node, skipping the test when the
// binaries are not built or the test is not root, and checks in t.Cleanup
// that Stop leaves no process, mount, loop device, cgroup or network
// interface behind.
func startNode(t *testing.T) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a control plane and a kubelet")
	}
	if os.Geteuid() != 0 {
		t.Skip("the kubelet, containerd and the test CSI driver need root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := StartWith(ctx, t.TempDir(), Options{Kubelet: true})
	switch {
	case errors.Is(err, ErrNoClusterTools):
		t.Skipf("%v", err) // names make cluster-tools
	case errors.Is(err, ErrNoBinaries) && os.Getenv(SkipEnv) == "1":
		t.Skipf("%v", err)
	case err != nil:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs:\n%s", c.Logs())
		}
		pids := c.PIDs()
		c.Stop()
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process %d still there after Stop (kill 0: %v)", pid, err)
			}
		}
		if err := c.Leftovers(); err != nil {
			t.Errorf("after Stop: %v", err)
		}
	})
	return c
}

// TestKubelet: the real path of a backup on one node. A Block PVC
// provisioned by csi-provisioner through the test driver; a pod on the real
// kubelet writes known bytes onto the raw device (mover import of a
// snapshot made on the host); a VolumeSnapshot made ready by
// snapshot-controller and csi-snapshotter; a clone PVC from it; and a pod
// of the mover image that exports the clone, seen as a raw block device,
// into a repository on a hostPath volume. The host then imports that
// snapshot and finds the bytes it wrote. `mover k8s export` runs its whole
// orchestration against S3 on the host (through the pod network), `mover
// k8s import` writes that snapshot into a new PVC that a pod reads back,
// export runs twice more as deploy/rbac.yaml's identities, the second time
// incrementally with the changed blocks from the real
// csi-snapshot-metadata sidecar, and once for a Filesystem (ext4) PVC
// that a pod wrote a file into. Everything is deleted through the real
// controllers (finalizers honoured, the driver's volumes and snapshots
// gone), and Stop, with a pod still running on a Block volume, leaves
// nothing behind.
func TestKubelet(t *testing.T) {
	c := startNode(t)
	ctx := t.Context()
	kube := kubernetes.NewForConfigOrDie(c.Config)
	snaps := snapclient.NewForConfigOrDie(c.Config)
	dir := t.TempDir()

	// The mover, on the host and as the image the pods run.
	bin := filepath.Join(dir, "bin")
	if err := goBuild(ctx, bin, "github.com/blockmover/blockmover/cmd/mover"); err != nil {
		t.Fatal(err)
	}
	mover := filepath.Join(bin, "mover")
	const image = "blockmover.test/mover:e2e"
	tar := filepath.Join(dir, "mover.tar")
	if err := BuildImage(ctx, mover, tar, image, "mover"); err != nil {
		t.Fatal(err)
	}
	if err := c.ImportImage(ctx, tar); err != nil {
		t.Fatal(err)
	}

	// A repository on the host, shared with the pods as a hostPath, and a
	// source image of known bytes exported into it.
	host := filepath.Join(dir, "host")
	if err := os.MkdirAll(host, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "pw"), []byte("e2e password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctx, mover, append(args, "-r", filepath.Join(host, "repo"), "--password-file", filepath.Join(host, "pw"), "-q")...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("mover %v: %v: %s", args, err, stderr.String())
		}
		return out
	}
	run("init")
	const size = 16 << 20
	want := make([]byte, size)
	for i := range 1 << 20 {
		want[i] = byte(i*7 + i>>11) // the first MiB
	}
	copy(want[9<<20:], bytes.Repeat([]byte("blockmover"), 10_000))
	src := filepath.Join(dir, "src.img")
	if err := os.WriteFile(src, want, 0o600); err != nil {
		t.Fatal(err)
	}
	var exported struct {
		Snapshot string `json:"snapshot"`
		NewBytes int64  `json:"new_bytes"`
		Size     int64  `json:"size"`
	}
	if err := json.Unmarshal(run("export", "--source", src, "--name", "src", "--json"), &exported); err != nil {
		t.Fatal(err)
	}

	const ns, class = "e2e", "blockmover"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.DefaultClasses(ctx, class); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "ServiceAccount default", func() (bool, string) {
		_, err := kube.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})

	block := corev1.PersistentVolumeBlock
	pvc := func(ns, name string, from *corev1.TypedLocalObjectReference) {
		t.Helper()
		if _, err := kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: new(class),
				VolumeMode:       &block,
				DataSource:       from,
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}},
			},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// moverPod runs the mover image with args, the claim as the raw device
	// /dev/xvda and the host's directory at /host, until it ends; it
	// returns the container's termination message (the mover's JSON
	// result).
	moverPod := func(ns, name, claim string, args ...string) string {
		t.Helper()
		hostDir := corev1.HostPathDirectory
		if _, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{
					Name: "mover", Image: image, ImagePullPolicy: corev1.PullNever,
					Args:          append(args, "-r", "/host/repo", "--password-file", "/host/pw", "-q"),
					VolumeDevices: []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/xvda"}},
					VolumeMounts:  []corev1.VolumeMount{{Name: "host", MountPath: "/host"}},
				}},
				Volumes: []corev1.Volume{
					{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}},
					{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: host, Type: &hostDir}}},
				},
			},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var msg string
		waitFor(t, 2*time.Minute, "pod "+name+" Succeeded", func() (bool, string) {
			p, err := kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			seen := fmt.Sprintf("phase %s, conditions %+v", p.Status.Phase, p.Status.Conditions)
			for _, s := range p.Status.ContainerStatuses {
				if s.State.Terminated != nil {
					msg = s.State.Terminated.Message
					seen = fmt.Sprintf("exit %d: %s", s.State.Terminated.ExitCode, msg)
				} else if s.State.Waiting != nil {
					seen = fmt.Sprintf("waiting: %s %s", s.State.Waiting.Reason, s.State.Waiting.Message)
				}
			}
			if p.Status.Phase == corev1.PodFailed {
				t.Fatalf("pod %s failed: %s", name, seen)
			}
			return p.Status.Phase == corev1.PodSucceeded, seen
		})
		if p, err := kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); err != nil || p.Spec.NodeName != NodeName {
			t.Errorf("pod %s ran on %q (%v), want %s", name, p.Spec.NodeName, err, NodeName)
		}
		return msg
	}

	// A Block PVC, provisioned when the writer pod is scheduled; the
	// writer puts the source snapshot's bytes onto the raw device.
	pvc(ns, "data", nil)
	moverPod(ns, "writer", "data", "import", "--snapshot", exported.Snapshot, "--target", "/dev/xvda")

	// A VolumeSnapshot of it, and a clone PVC from that.
	if _, err := snaps.SnapshotV1().VolumeSnapshots(ns).Create(ctx, &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: "snap"},
		Spec: snapv1.VolumeSnapshotSpec{
			Source:                  snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: new("data")},
			VolumeSnapshotClassName: new(class),
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "VolumeSnapshot ready", func() (bool, string) {
		vs, err := snaps.SnapshotV1().VolumeSnapshots(ns).Get(ctx, "snap", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if vs.Status == nil || vs.Status.ReadyToUse == nil {
			return false, "no status"
		}
		return *vs.Status.ReadyToUse, fmt.Sprintf("%+v", vs.Status)
	})

	pvc(ns, "clone", &corev1.TypedLocalObjectReference{APIGroup: new("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "snap"})

	// The mover pod exports the clone, a raw block device to it.
	msg := moverPod(ns, "exporter", "clone", "export", "--source", "/dev/xvda", "--name", "clone")
	var clone struct {
		Snapshot string `json:"snapshot"`
		Size     int64  `json:"size"`
		NewBytes int64  `json:"new_bytes"`
	}
	if err := json.Unmarshal([]byte(msg), &clone); err != nil {
		t.Fatalf("the exporter's termination message %q: %v", msg, err)
	}
	if clone.Size != size || clone.NewBytes != 0 {
		t.Errorf("export of the clone: %+v, want %d bytes, none new (the writer's data)", clone, size)
	}
	got := filepath.Join(dir, "got.img")
	run("import", "--snapshot", clone.Snapshot, "--target", got)
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
		t.Errorf("the clone's export differs from what the writer wrote (%d bytes, %v)", len(b), err)
	}

	// In-cluster clients in pods reach the API server at the kubernetes
	// Service, authenticated by their ServiceAccount token: this one is
	// refused, as the namespace's default may list no Jobs.
	if _, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "incluster"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "mover", Image: image, ImagePullPolicy: corev1.PullNever,
				Args:                     []string{"k8s", "cleanup", "--operation", "nothing"},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "pod incluster refused by the API server", func() (bool, string) {
		p, err := kube.CoreV1().Pods(ns).Get(ctx, "incluster", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, s := range p.Status.ContainerStatuses {
			if s.State.Terminated != nil {
				m := s.State.Terminated.Message
				return strings.Contains(m, `"system:serviceaccount:`+ns+`:default" cannot`), m
			}
		}
		return false, string(p.Status.Phase)
	})

	// mover k8s export, the product's orchestration, on the real
	// cluster: a VolumeSnapshot of the writer's PVC, a block clone, a mover
	// Job on the kubelet that writes to S3 (versitygw on the host's
	// loopback, reached through a proxy at the pod network's gateway);
	// the host imports the snapshot and finds the writer's bytes, and no
	// object of the operation is left.
	t.Run("mover-k8s", func(t *testing.T) {
		s3test.SetTestEnv()
		srv := s3test.Start(t, false)
		bucket := srv.NewBucket(t, false)
		podS3, err := c.ProxyToPods(strings.TrimPrefix(srv.Endpoint, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		repoURL := "s3://" + bucket + "/repo"
		hostMover := func(args ...string) []byte {
			t.Helper()
			cmd := exec.CommandContext(ctx, mover, args...)
			cmd.Env = append(os.Environ(), "MOVER_PASSWORD=e2e", "KUBECONFIG="+filepath.Join(dir, "kubeconfig"))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("mover %v: %v: %s", args, err, stderr.String())
			}
			return out
		}
		s3args := []string{"-r", repoURL, "--s3-endpoint", srv.Endpoint, "--s3-path-style", "-q"}
		hostMover(append([]string{"init"}, s3args...)...)
		if err := c.WriteKubeconfig(filepath.Join(dir, "kubeconfig")); err != nil {
			t.Fatal(err)
		}
		secret := map[string]string{"MOVER_PASSWORD": "e2e", "MOVER_REPOSITORY": repoURL,
			"AWS_ENDPOINT_URL": "http://" + podS3}
		for k, v := range s3test.Env() {
			if k != "AWS_CONFIG_FILE" && k != "AWS_SHARED_CREDENTIALS_FILE" {
				secret[k] = v
			}
		}
		if _, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "repo"}, StringData: secret,
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out := hostMover("k8s", "export", "-n", ns, "--pvc", "data", "--secret", "repo", "--name", "data",
			"--image", image, "--image-pull-policy", "Never", "--job-arg=--s3-path-style", "--timeout", "3m", "--json")
		t.Logf("mover k8s export in %v: %s", time.Since(start).Round(time.Millisecond), out)
		var res struct {
			Snapshot string `json:"snapshot"`
		}
		if err := json.Unmarshal(out, &res); err != nil || res.Snapshot == "" {
			t.Fatalf("mover k8s export printed %q (%v)", out, err)
		}
		got := filepath.Join(dir, "k8s.img")
		hostMover(append([]string{"import", "--snapshot", res.Snapshot, "--target", got}, s3args...)...)
		if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
			t.Errorf("the export of PVC data differs from what the writer wrote (%d bytes, %v)", len(b), err)
		}
		jobs, err := kube.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(jobs.Items) != 0 {
			t.Errorf("Jobs left after the export: %d (%v)", len(jobs.Items), err)
		}

		// mover k8s import of that snapshot into a new PVC; a pod reads
		// it back (exports it into the host's repository): the same bytes.
		hostMover("k8s", "import", "-n", ns, "--pvc", "restored", "--snapshot", res.Snapshot, "--size", "16MiB",
			"--secret", "repo", "--image", image, "--image-pull-policy", "Never", "--job-arg=--s3-path-style", "--timeout", "3m")
		msg := moverPod(ns, "reader", "restored", "export", "--source", "/dev/xvda", "--name", "restored")
		var back struct {
			Snapshot string `json:"snapshot"`
		}
		if err := json.Unmarshal([]byte(msg), &back); err != nil {
			t.Fatalf("the reader's termination message %q: %v", msg, err)
		}
		restored := filepath.Join(dir, "restored.img")
		run("import", "--snapshot", back.Snapshot, "--target", restored)
		if b, err := os.ReadFile(restored); err != nil || !bytes.Equal(b, want) {
			t.Errorf("the PVC that mover k8s import wrote differs from the snapshot (%d bytes, %v)", len(b), err)
		}
		if err := kube.CoreV1().Pods(ns).Delete(ctx, "reader", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "restored", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}

		// Incremental, with changed-block tracking, as deploy/rbac.yaml's
		// identities in the namespace blockmover: the orchestrator keeps
		// the VolumeSnapshot of a first export; a pod changes 64 KiB of
		// the volume; the second export's Job asks the real
		// csi-snapshot-metadata sidecar for the blocks that changed between
		// the two snapshots (its init container, mover k8s changes, with
		// the pod's ServiceAccount token) and reads only around them.
		const blk = "blockmover"
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: blk}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := c.apply(ctx, deploy.RBAC(), blk); err != nil {
			t.Fatal(err)
		}
		orch, err := c.Kubeconfig("blockmover-orchestrator", "system:serviceaccount:blockmover:blockmover", "system:serviceaccounts", "system:serviceaccounts:blockmover")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kube.CoreV1().Secrets(blk).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "repo"}, StringData: secret,
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "ServiceAccount blockmover/default", func() (bool, string) {
			_, err := kube.CoreV1().ServiceAccounts(blk).Get(ctx, "default", metav1.GetOptions{})
			return err == nil, fmt.Sprint(err)
		})
		pvc(blk, "vol", nil)
		moverPod(blk, "writer", "vol", "import", "--snapshot", exported.Snapshot, "--target", "/dev/xvda")
		k8sExport := func(op string, extra ...string) (res struct {
			Snapshot  string `json:"snapshot"`
			ReadBytes int64  `json:"read_bytes"`
		}) {
			t.Helper()
			out := hostMover(append([]string{"k8s", "export", "--kubeconfig", orch, "-n", blk, "--pvc", "vol", "--secret", "repo",
				"--name", "vol", "--operation", op, "--service-account", "blockmover-mover", "--image", image,
				"--image-pull-policy", "Never", "--job-arg=--s3-path-style", "--timeout", "3m", "--json"}, extra...)...)
			if err := json.Unmarshal(out, &res); err != nil || res.Snapshot == "" {
				t.Fatalf("mover k8s export printed %q (%v)", out, err)
			}
			return res
		}
		first := k8sExport("first", "--keep-snapshot")
		vs, err := snaps.SnapshotV1().VolumeSnapshots(blk).Get(ctx, "mover-first", metav1.GetOptions{})
		if err != nil || vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil {
			t.Fatalf("the kept VolumeSnapshot: %+v (%v)", vs, err)
		}
		content, err := snaps.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
		if err != nil || content.Status == nil || content.Status.SnapshotHandle == nil {
			t.Fatalf("the kept VolumeSnapshotContent: %+v (%v)", content, err)
		}

		want2 := bytes.Clone(want)
		copy(want2[5<<20:], bytes.Repeat([]byte{0xa5}, 64<<10))
		src2 := filepath.Join(dir, "src2.img")
		if err := os.WriteFile(src2, want2, 0o600); err != nil {
			t.Fatal(err)
		}
		var second struct {
			Snapshot string `json:"snapshot"`
		}
		if err := json.Unmarshal(run("export", "--source", src2, "--name", "src2", "--json"), &second); err != nil {
			t.Fatal(err)
		}
		moverPod(blk, "changer", "vol", "import", "--snapshot", second.Snapshot, "--assume-base", exported.Snapshot, "--target", "/dev/xvda")

		start = time.Now()
		incr := k8sExport("second", "--base", first.Snapshot, "--base-snapshot-handle", *content.Status.SnapshotHandle)
		t.Logf("incremental mover k8s export in %v: read %d bytes", time.Since(start).Round(time.Millisecond), incr.ReadBytes)
		// The 64 KiB changed, inside zeros the base recorded as a hole,
		// and one read of 128 KiB (the incremental read size) where that
		// hole ends, which the re-cut must see to resync: 192 KiB, where
		// it read the hole's 8 MiB before the mover knew the base's zeros
		// (mover.TestIncrementalSkipsKnownZeros).
		if incr.ReadBytes == 0 || incr.ReadBytes > 64<<10+128<<10 {
			t.Errorf("the incremental export read %d bytes of %d, want the 64 KiB changed and 128 KiB where the hole ends", incr.ReadBytes, size)
		}
		got2 := filepath.Join(dir, "k8s2.img")
		hostMover(append([]string{"import", "--snapshot", incr.Snapshot, "--target", got2}, s3args...)...)
		if b, err := os.ReadFile(got2); err != nil || !bytes.Equal(b, want2) {
			t.Errorf("the incremental export of PVC vol differs from the volume (%d bytes, %v)", len(b), err)
		}

		// Faults (issue 13, point 3), each left for inspection
		// (--keep-on-failure) and then cleaned up.
		k8sFails := func(op string, extra ...string) (string, *batchv1.Job) {
			t.Helper()
			args := append([]string{"k8s", "export", "--kubeconfig", orch, "-n", blk, "--pvc", "vol",
				"--name", "vol", "--operation", op, "--service-account", "blockmover-mover", "--image", image,
				"--image-pull-policy", "Never", "--job-arg=--s3-path-style", "--timeout", "3m", "--keep-on-failure"}, extra...)
			cmd := exec.CommandContext(ctx, mover, args...)
			cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(dir, "kubeconfig"))
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("mover %v succeeded: %s", args, out)
			}
			jobs, err := kube.BatchV1().Jobs(blk).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var job *batchv1.Job
			for i := range jobs.Items {
				if strings.Contains(jobs.Items[i].Name, op) {
					job = &jobs.Items[i]
				}
			}
			if err := testdriver.ClearFault(c.node.csiState, "CreateSnapshot"); err != nil {
				t.Fatal(err)
			}
			hostMover("k8s", "cleanup", "--kubeconfig", orch, "-n", blk, "--operation", op)
			return strings.TrimSpace(string(out)), job
		}
		// A wrong password is permanent (exit 12): the Job's
		// podFailurePolicy fails it with the first pod, and the caller gets
		// the mover's own line.
		bad := maps.Clone(secret)
		bad["MOVER_PASSWORD"] = "wrong"
		if _, err := kube.CoreV1().Secrets(blk).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "badpw"}, StringData: bad,
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		msg, job := k8sFails("wrongpw", "--secret", "badpw")
		if !strings.Contains(msg, "wrong password") || job == nil || job.Status.Failed != 1 || !hasCondition(job, batchv1.JobFailed, "PodFailurePolicy") {
			t.Errorf("wrong password: %q; Job %+v", msg, job)
		}
		// The CBT step fails (a base snapshot handle the driver does not
		// know): the init container's message reaches the caller, not
		// just BackoffLimitExceeded.
		msg, _ = k8sFails("badbase", "--secret", "repo", "--backoff-limit", "0", "--base", first.Snapshot,
			"--base-snapshot-handle", "snap-00000000000000000000000000000000")
		if !strings.Contains(msg, "init container changes") {
			t.Errorf("a failed CBT step: %q does not carry the init container's message", msg)
		}
		// The driver fails CreateSnapshot twice (DeadlineExceeded): the
		// csi-snapshotter retries, the snapshot controller puts the error
		// on the VolumeSnapshot and clears it; the export goes on (point 1).
		if err := testdriver.InjectFault(c.node.csiState, "CreateSnapshot", codes.DeadlineExceeded, 2); err != nil {
			t.Fatal(err)
		}
		k8sExport("transient")
		// A snapshot that never gets ready: a clear timeout carrying the
		// driver's error (the fault is cleared before the cleanup).
		if err := testdriver.InjectFault(c.node.csiState, "CreateSnapshot", codes.ResourceExhausted, -1); err != nil {
			t.Fatal(err)
		}
		msg, _ = k8sFails("neverready", "--secret", "repo", "--snapshot-timeout", "20s")
		if !strings.Contains(msg, "not ready") || !strings.Contains(msg, "injected fault") {
			t.Errorf("a snapshot that never gets ready: %q", msg)
		}
		// Admission refuses the pod (no such ServiceAccount): the Job
		// controller's FailedCreate event is the error, within a minute
		// (issue 13, point 5), not a wait for the Job's deadline.
		start = time.Now()
		msg, _ = k8sFails("nosa", "--secret", "repo", "--service-account", "no-such-sa")
		if !strings.Contains(msg, "no pod could be created") || !strings.Contains(msg, "no-such-sa") || time.Since(start) > 2*time.Minute {
			t.Errorf("a missing ServiceAccount after %v: %q", time.Since(start).Round(time.Second), msg)
		}

		// A Filesystem PVC (ext4, made by the driver at NodeStage): a pod
		// writes the source image as a file into it, mover k8s export
		// handles it at block level (--allow-volume-mode-change), and the
		// host finds the file in the exported ext4 image.
		fsMode := corev1.PersistentVolumeFilesystem
		if _, err := kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "fs"},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				VolumeMode:  &fsMode,
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
			},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		hostDir := corev1.HostPathDirectory
		if _, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "fswriter"},
			Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{
					Name: "mover", Image: image, ImagePullPolicy: corev1.PullNever,
					Args: []string{"import", "--snapshot", exported.Snapshot, "--target", "/data/blob.img",
						"-r", "/host/repo", "--password-file", "/host/pw", "-q"},
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "host", MountPath: "/host"}},
				}},
				Volumes: []corev1.Volume{
					{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "fs"}}},
					{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: host, Type: &hostDir}}},
				},
			},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "pod fswriter Succeeded", func() (bool, string) {
			p, err := kube.CoreV1().Pods(ns).Get(ctx, "fswriter", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if p.Status.Phase == corev1.PodFailed {
				t.Fatalf("pod fswriter failed: %+v", p.Status.ContainerStatuses)
			}
			return p.Status.Phase == corev1.PodSucceeded, string(p.Status.Phase)
		})
		if err := kube.CoreV1().Pods(ns).Delete(ctx, "fswriter", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		out = hostMover("k8s", "export", "-n", ns, "--pvc", "fs", "--secret", "repo", "--name", "fs", "--allow-volume-mode-change",
			"--image", image, "--image-pull-policy", "Never", "--job-arg=--s3-path-style", "--timeout", "3m", "--json")
		var fsRes struct {
			Snapshot string `json:"snapshot"`
		}
		if err := json.Unmarshal(out, &fsRes); err != nil || fsRes.Snapshot == "" {
			t.Fatalf("mover k8s export of the Filesystem PVC printed %q (%v)", out, err)
		}
		fsImg, blob := filepath.Join(dir, "fs.img"), filepath.Join(dir, "blob.img")
		hostMover(append([]string{"import", "--snapshot", fsRes.Snapshot, "--target", fsImg}, s3args...)...)
		if out, err := exec.CommandContext(ctx, "debugfs", "-R", "dump /blob.img "+blob, fsImg).CombinedOutput(); err != nil {
			t.Fatalf("debugfs: %v: %s", err, out)
		}
		if b, err := os.ReadFile(blob); err != nil || !bytes.Equal(b, want) {
			t.Errorf("the file in the exported Filesystem PVC differs from what the pod wrote (%d bytes, %v)", len(b), err)
		}
		if err := kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "fs", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}

		hostMover("k8s", "cleanup", "--kubeconfig", orch, "-n", blk, "--operation", "first")
		for _, p := range []string{"writer", "changer"} {
			if err := kube.CoreV1().Pods(blk).Delete(ctx, p, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := kube.CoreV1().PersistentVolumeClaims(blk).Delete(ctx, "vol", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	// Delete it all through the controllers: pods, the clone, the
	// snapshot, the source; the PVs and the VolumeSnapshotContent go with
	// them (reclaim policy and deletion policy Delete), and the driver
	// deletes its files.
	for _, p := range []string{"writer", "exporter", "incluster"} {
		if err := kube.CoreV1().Pods(ns).Delete(ctx, p, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"clone", "data"} {
		if err := kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, p, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := snaps.SnapshotV1().VolumeSnapshots(ns).Delete(ctx, "snap", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "pods, PVCs, PVs, snapshots and the driver's files gone", func() (bool, string) {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		pvcs, err := kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		pvs, err := kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		vs, err := snaps.SnapshotV1().VolumeSnapshots(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		vsc, err := snaps.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		files, _ := filepath.Glob(filepath.Join(c.node.csiState, "*", "*"))
		n := len(pods.Items) + len(pvcs.Items) + len(pvs.Items) + len(vs.Items) + len(vsc.Items) + len(files)
		return n == 0, fmt.Sprintf("%d pods, %d PVCs, %d PVs, %d VolumeSnapshots, %d contents, files %v",
			len(pods.Items), len(pvcs.Items), len(pvs.Items), len(vs.Items), len(vsc.Items), files)
	})
	if _, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		t.Error("namespace gone")
	}

	// A pod left running on a Block volume when the cluster stops: Stop
	// still leaves nothing behind (the driver's loop device and the one
	// the kubelet pins it with).
	pvc(ns, "left", nil)
	if _, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "left"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "pause", Image: PauseImage, ImagePullPolicy: corev1.PullNever,
				VolumeDevices: []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/xvda"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "left"}}}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "pod left Running", func() (bool, string) {
		p, err := kube.CoreV1().Pods(ns).Get(ctx, "left", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase)
	})
	if loops, err := nodeLoops(c.node.csiState); err != nil || len(loops) != 2 {
		t.Errorf("loop devices of the running pod: %v (%v), want the driver's and the kubelet's", loops, err)
	}
}

// hasCondition reports whether job has condition t true with reason.
func hasCondition(job *batchv1.Job, t batchv1.JobConditionType, reason string) bool {
	for _, c := range job.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue && c.Reason == reason {
			return true
		}
	}
	return false
}
