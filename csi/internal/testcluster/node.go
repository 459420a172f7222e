package testcluster

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/blockmover/blockmover/csi/internal/testdriver"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// NodeName is the name of the node that Options.Kubelet registers. The test
// CSI driver runs with it as its node ID, so it is also the value of the
// driver's topology key (testdriver.TopologyKey) on the node and on every
// volume.
const NodeName = "blockmover-node"

// PauseImage is the sandbox image of the node's pods: cmd/pause, built and
// imported when the node starts (nothing is pulled).
const PauseImage = "blockmover.test/pause:1"

// The module of this package, to build the pause image and the test driver
// from.
const (
	pausePkg  = "github.com/blockmover/blockmover/csi/internal/testcluster/cmd/pause"
	driverPkg = "github.com/blockmover/blockmover/csi/internal/testdriver/cmd/blockmover-csi-testdriver"
)

// node is the kubelet side of the cluster: a mount and PID namespace of its
// own (the holder process is its init) in which containerd, the kubelet and
// the test CSI driver run; the plugin registration stand-in; and the
// csi-provisioner and csi-snapshotter, which run outside it.
type node struct {
	dir, run   string // state under the cluster's directory; a short directory for unix sockets and the kubelet's root
	cgroupRoot string // the kubelet's cgroupRoot, "/blockmover-<run's suffix>"
	csiState   string // the test driver's --state-dir
	csiSock    string
	ctrdSock   string
	ctr        string // the ctr binary

	holder     *exec.Cmd // unshare, whose child is the namespaces' init
	holderDone chan struct{}
	nsInit     int       // the init's PID, as the host sees it
	kubelet    *exec.Cmd // nsenter running the kubelet
	reg        *registrar
	ifaces     []string       // the host's network interfaces before the start
	listeners  []net.Listener // ProxyToPods's
}

func nodeBinaries() (map[string]string, error) {
	bins := map[string]string{}
	for _, n := range []string{"kubelet", "containerd", "ctr", "containerd-shim-runc-v2", "runc", "csi-provisioner", "csi-snapshotter", "csi-snapshot-metadata"} {
		p, err := ClusterTool(n)
		if err != nil {
			return nil, err
		}
		bins[n] = p
	}
	for _, n := range []string{"unshare", "nsenter", "losetup", "mkfs.ext4", "blkid", "ip", "nft", "bash", "flock"} {
		p, err := exec.LookPath(n)
		if err != nil {
			return nil, fmt.Errorf("%w: %s (util-linux, e2fsprogs, iproute2, nftables): %w", ErrNoClusterTools, n, err)
		}
		bins[n] = p
	}
	return bins, nil
}

// nsInitScript is the init of the node's namespaces (run by unshare
// --mount --pid --fork --mount-proc). It gives the namespace its own /run,
// /var/lib and /var/log (the kubelet, containerd, runc and CNI write fixed
// paths there: device-plugins, shim sockets, netns files, container log
// links), copies of the sysctl files that the kubelet sets (so the host's
// kernel.panic, kernel.panic_on_oops and vm.overcommit_memory never
// change), and iptables made to fail (so the kubelet adds no chain to the
// host's tables). It makes the pod network: a network namespace of its own
// (held by a sleep, its PID in /run/podnet.pid) with a bridge at
// PodGateway, which the CNI plugin attaches the pods to. When the init dies
// the kernel kills every process of the namespace (containerd, its shims,
// the containers, the kubelet, the CSI driver, the pod network's holder),
// and the namespace's mounts, the pod network and every veth go with them.
const nsInitScript = `set -eu
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mount -t tmpfs -o mode=0755 tmpfs /var/log
mkdir -p /run/sysctl
for f in kernel/panic kernel/panic_on_oops vm/overcommit_memory; do
	c=/run/sysctl/${f//\//.}
	cat /proc/sys/$f >$c
	mount --bind $c /proc/sys/$f
done
for t in iptables ip6tables; do
	if p=$(command -v $t); then mount --bind /bin/false "$(readlink -f "$p")"; fi
done
unshare --net sleep infinity &
net=$!
while [ "$(readlink /proc/$net/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do sleep 0.01; done
nsenter --net=/proc/$net/ns/net sh -c 'ip link set lo up && ip link add br0 type bridge && ip addr add ` + PodGateway + `/15 dev br0 && ip link set br0 up'
echo $net >/run/podnet.pid
echo 2 >/run/podnet.next
echo ready >"$1"
trap 'exit 0' TERM
while :; do sleep 3600 & wait $! || true; done
`

//go:embed rbac-csi-provisioner.yaml
var csiProvisionerRBAC []byte

// startNode runs the node: containerd, the kubelet and the test CSI driver
// in namespaces of their own, the registration of the driver with the
// kubelet, csi-provisioner and csi-snapshotter; and waits until the node
// is Ready with the driver in its CSINode.
func (c *Cluster) startNode(ctx context.Context, bins map[string]string) error {
	ifaces, err := interfaceNames()
	if err != nil {
		return err
	}
	sweepStale()
	n := &node{dir: filepath.Join(c.dir, "node"), csiState: filepath.Join(c.dir, "node", "csi"), ctr: bins["ctr"], ifaces: ifaces}
	c.node = n
	if n.run, err = os.MkdirTemp("", "bmn"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.run, "csi-state"), []byte(n.csiState), 0o644); err != nil {
		return err
	}
	n.cgroupRoot = "/blockmover-" + strings.TrimPrefix(filepath.Base(n.run), "bmn")
	n.csiSock = filepath.Join(n.run, "csi.sock")
	n.ctrdSock = filepath.Join(n.run, "containerd.sock")
	p := nodePaths{bin: filepath.Join(n.dir, "bin"), cniBin: filepath.Join(n.dir, "cni", "bin"), cniConf: filepath.Join(n.dir, "cni", "conf"),
		pauseTar: filepath.Join(n.dir, "pause.tar"), ctrdConf: filepath.Join(n.dir, "containerd.toml")}
	for _, d := range []string{p.bin, p.cniBin, p.cniConf, n.csiState} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}

	if err := n.writeFiles(ctx, bins, p); err != nil {
		return err
	}
	if err := c.startContainerd(ctx, n, bins, p); err != nil {
		return err
	}
	kube, err := c.startDriver(ctx, n, p)
	if err != nil {
		return err
	}
	root, err := c.startKubelet(ctx, n, bins)
	if err != nil {
		return err
	}
	if n.reg, err = startRegistrar(filepath.Join(root, "plugins_registry"), testdriver.DefaultName, n.csiSock); err != nil {
		return err
	}
	if err := c.podAPIAccess(ctx); err != nil {
		return err
	}
	if err := c.startControllerSide(ctx, n, bins); err != nil {
		return err
	}
	return c.waitNodeReady(ctx, n, kube)
}

// nodePaths are the node's files that its start steps share.
type nodePaths struct {
	bin, cniBin, cniConf string
	pauseTar, ctrdConf   string
}

// writeFiles builds the pause image and the test driver and writes the
// CNI and containerd configuration.
func (n *node) writeFiles(ctx context.Context, bins map[string]string, p nodePaths) error {
	// The pause image and the test driver, built from this module.
	if err := goBuild(ctx, p.bin, pausePkg, driverPkg); err != nil {
		return err
	}
	if err := BuildImage(ctx, filepath.Join(p.bin, "pause"), p.pauseTar, PauseImage, "pause"); err != nil {
		return err
	}
	// containerd finds its shim, and the shim runc, in PATH.
	for _, b := range []string{"containerd-shim-runc-v2", "runc"} {
		if err := os.Symlink(bins[b], filepath.Join(p.bin, b)); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(p.cniBin, "blockmover-veth"), []byte(cniPlugin), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(p.cniConf, "10-blockmover.conflist"), []byte(cniConf), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(p.ctrdConf, []byte(containerdConfig(filepath.Join(n.dir, "containerd"), n.ctrdSock, bins["runc"], p.cniBin, p.cniConf)), 0o644); err != nil {
		return err
	}

	return nil
}

// startContainerd starts the node's namespaces and containerd in them,
// and imports the pause image.
func (c *Cluster) startContainerd(ctx context.Context, n *node, bins map[string]string, p nodePaths) error {
	// The namespaces, and containerd in them.
	if err := n.startHolder(bins); err != nil {
		return err
	}
	path := p.bin + ":" + os.Getenv("PATH")
	if err := c.startIn(n, []string{"PATH=" + path}, bins["containerd"], "--config", p.ctrdConf, "--log-level", "warn"); err != nil {
		return err
	}
	if err := c.waitFor(ctx, time.Minute, "containerd", func() error {
		return exec.CommandContext(ctx, n.ctr, "--address", n.ctrdSock, "version").Run()
	}); err != nil {
		return err
	}
	return n.ImportImage(ctx, p.pauseTar)
}

// startDriver starts the test CSI driver in the node's namespaces and
// creates its CSIDriver object; it returns a client of the cluster.
func (c *Cluster) startDriver(ctx context.Context, n *node, p nodePaths) (kubernetes.Interface, error) {
	// The test CSI driver, in the namespaces: it mounts what the kubelet's
	// pods use.
	if err := c.startIn(n, nil, filepath.Join(p.bin, "blockmover-csi-testdriver"),
		"--endpoint", "unix://"+n.csiSock, "--state-dir", n.csiState, "--node-id", NodeName); err != nil {
		return nil, err
	}
	if err := c.waitFor(ctx, 30*time.Second, "the CSI driver's socket", func() error {
		_, err := os.Stat(n.csiSock)
		return err
	}); err != nil {
		return nil, err
	}

	// The driver's CSIDriver object, as its deployment ships it: no
	// ControllerPublish, so nothing to attach (without the object the
	// kubelet waits for a VolumeAttachment that no external-attacher
	// makes).
	kube, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	if _, err := kube.StorageV1().CSIDrivers().Create(ctx, &storagev1.CSIDriver{
		ObjectMeta: metav1.ObjectMeta{Name: testdriver.DefaultName},
		Spec: storagev1.CSIDriverSpec{
			AttachRequired:       new(false),
			PodInfoOnMount:       new(false),
			VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent},
		},
	}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("CSIDriver %s: %w", testdriver.DefaultName, err)
	}
	return kube, nil
}

// startKubelet starts the kubelet in the node's namespaces and returns its
// root directory.
func (c *Cluster) startKubelet(ctx context.Context, n *node, bins map[string]string) (string, error) {
	// The kubelet, as system:node:<NodeName> (the Node authorizer), under a
	// cgroup root of its own that it wants to find made.
	if err := makeCgroups(n.cgroupRoot); err != nil {
		return "", err
	}
	kc, err := c.pki.kubeconfig("kubelet", c.Config.Host, "system:node:"+NodeName, "system:nodes")
	if err != nil {
		return "", err
	}
	ports, err := freePorts(2)
	if err != nil {
		return "", err
	}
	root := filepath.Join(n.run, "kubelet")
	kubeletConf := filepath.Join(n.dir, "kubelet.yaml")
	ip, err := nodeIP()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(kubeletConf, []byte(kubeletConfig(n, c.pki.CAFile, ip, ports)), 0o644); err != nil {
		return "", err
	}
	if err := c.startIn(n, nil, bins["kubelet"], "--config="+kubeletConf, "--kubeconfig="+kc,
		"--root-dir="+root, "--cert-dir="+filepath.Join(n.dir, "kubelet-pki"),
		"--hostname-override="+NodeName, "--node-ip="+ip.String(), "--v=1"); err != nil {
		return "", err
	}
	n.kubelet = c.procs[len(c.procs)-1]
	return root, nil
}

// startControllerSide starts the driver's sidecars: csi-provisioner,
// csi-snapshotter and csi-snapshot-metadata.
func (c *Cluster) startControllerSide(ctx context.Context, n *node, bins map[string]string) error {
	// The controller side of the driver.
	if err := c.apply(ctx, csiProvisionerRBAC, "default"); err != nil {
		return fmt.Errorf("csi-provisioner RBAC: %w", err)
	}
	kc, err := c.pki.kubeconfig("csi-provisioner", c.Config.Host,
		"system:serviceaccount:default:csi-provisioner", "system:serviceaccounts", "system:serviceaccounts:default")
	if err != nil {
		return err
	}
	// The provisioner puts a finalizer of its own on a VolumeSnapshot
	// that a PVC is made from, and takes it off once the PVC is
	// provisioned; when that update meets a conflict (the
	// snapshot-controller writing the same VolumeSnapshot, common on a
	// busy machine) only its orphan sweep takes it off, every 5 minutes
	// by default: a VolumeSnapshot deleted by then stays, being deleted,
	// that long (docs/kubernetes.md). The tests wait for deletions a
	// minute, so the sweep runs every 5 s here.
	if err := c.start(bins["csi-provisioner"], "--kubeconfig="+kc, "--csi-address="+n.csiSock,
		"--leader-election=false", "--feature-gates=Topology=true", "--extra-create-metadata",
		"--snapshot-orphan-sweep-interval=5s", "--v=2"); err != nil {
		return err
	}
	if err := c.StartCSISnapshotter(ctx, n.csiSock); err != nil {
		return err
	}
	if err := c.startSnapshotMetadata(ctx, bins["csi-snapshot-metadata"], n.csiSock); err != nil {
		return err
	}
	return nil
}

// waitNodeReady waits until the node is Ready with the test driver
// registered.
func (c *Cluster) waitNodeReady(ctx context.Context, n *node, kube kubernetes.Interface) error {
	return c.waitFor(ctx, 2*time.Minute, "node "+NodeName+" Ready with "+testdriver.DefaultName, func() error {
		nd, err := kube.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ready := false
		for _, cond := range nd.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status != corev1.ConditionTrue {
					return fmt.Errorf("not ready: %s", cond.Message)
				}
				ready = true
			}
		}
		if !ready {
			return errors.New("no Ready condition")
		}
		if s := n.reg.lastStatus(); s != nil && !s.PluginRegistered {
			return fmt.Errorf("the kubelet refused the driver: %s", s.Error)
		}
		cn, err := kube.StorageV1().CSINodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, d := range cn.Spec.Drivers {
			if d.Name == testdriver.DefaultName {
				return nil
			}
		}
		return fmt.Errorf("CSINode has no %s", testdriver.DefaultName)
	})
}

// containerdConfig is containerd's configuration: its state under root,
// its socket at sock, runc from the tools' cache (with
// restrict_oom_score_adj: the process lacks CAP_SYS_RESOURCE), the plugins
// that would write outside these directories off.
func containerdConfig(root, sock, runc, cniBin, cniConf string) string {
	return fmt.Sprintf(`version = 3
root = %q
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = %q

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = %q
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%q]
    conf_dir = %q
    use_internal_loopback = true

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
`, root, sock, PauseImage, runc, cniBin, cniConf)
}

// kubeletConfig is the kubelet's KubeletConfiguration: cgroup v1 allowed,
// the cgroupfs driver under a cgroup root of its own, served on the node's
// IP only (x509 clients of this cluster's CA: the API server, for logs and
// exec), eviction thresholds that a busy test machine never reaches.
func kubeletConfig(n *node, caFile string, ip net.IP, ports []int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
containerRuntimeEndpoint: unix://%s
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
volumePluginDir: %s
failSwapOn: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 1Mi, nodefs.available: 1%%, nodefs.inodesFree: 1%%, imagefs.available: 1%%}
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
`, n.cgroupRoot, n.ctrdSock, ip, ports[0], ports[1], caFile, filepath.Join(n.run, "flexvolume"))
}

// nodeIP is the node's InternalIP: the first global unicast IPv4 address of
// an interface that is up. The kubelet refuses a loopback address; the API
// server reaches the kubelet there (never by its name, which no resolver
// knows), and the kernel delivers that locally.
func nodeIP() (net.IP, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := i.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.To4(), nil
			}
		}
	}
	return nil, errors.New("testcluster: no interface with an IPv4 address for the node (the kubelet refuses loopback)")
}

// startHolder starts the namespaces' init and waits until it has set them
// up.
func (n *node) startHolder(bins map[string]string) error {
	ready := filepath.Join(n.run, "ns-ready")
	cmd := exec.Command(bins["unshare"], "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
		"--kill-child=SIGKILL", "--", bins["bash"], "-c", nsInitScript, "ns-init", ready)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the node's namespaces: %w", err)
	}
	n.holder = cmd
	n.holderDone = make(chan struct{})
	go func() { cmd.Wait(); close(n.holderDone) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case <-n.holderDone:
			return fmt.Errorf("the node's namespaces: %s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the node's namespaces not set up after 10s: %s", out.String())
		}
	}
	kids, err := children(cmd.Process.Pid)
	if err != nil || len(kids) != 1 {
		return fmt.Errorf("the node's namespaces: init of unshare %d: %v %w", cmd.Process.Pid, kids, err)
	}
	n.nsInit = kids[0]
	return os.WriteFile(filepath.Join(n.run, "holder.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
}

// startIn starts bin in the node's namespaces (nsenter), with env added to
// the environment; the process is the cluster's like any other.
func (c *Cluster) startIn(n *node, env []string, bin string, args ...string) error {
	cmd := exec.Command("nsenter", append([]string{"--target", strconv.Itoa(n.nsInit), "--mount", "--pid", "--", bin}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return c.startCmd(cmd, filepath.Base(bin))
}

// ImportImage imports an image tarball (hack/tools/imagebuild, `make image`)
// into the node's containerd, where the kubelet's pods find it without a
// pull.
func (c *Cluster) ImportImage(ctx context.Context, tarball string) error {
	if c.node == nil {
		return errors.New("testcluster: ImportImage needs a cluster with Options.Kubelet")
	}
	return c.node.ImportImage(ctx, tarball)
}

// ImportImage imports the image tarball into containerd's k8s.io namespace.
func (n *node) ImportImage(ctx context.Context, tarball string) error {
	out, err := exec.CommandContext(ctx, n.ctr, "--address", n.ctrdSock, "-n", "k8s.io", "images", "import", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w: %s", tarball, err, out)
	}
	return nil
}

// makeCgroups makes the cgroup root in every cgroup v1 hierarchy (and the
// unified one of a hybrid host), with the parent's CPUs and memory nodes
// for cpuset.
func makeCgroups(root string) error {
	tops, err := filepath.Glob("/sys/fs/cgroup/*/cgroup.procs")
	if err != nil {
		return err
	}
	for _, f := range tops {
		parent := filepath.Dir(f)
		d := filepath.Join(parent, root)
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("cgroup: %w", err)
		}
		for _, k := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(parent, k))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if err := os.WriteFile(filepath.Join(d, k), v, 0o644); err != nil {
				return fmt.Errorf("cgroup: %w", err)
			}
		}
	}
	return nil
}

// goBuild builds the commands pkgs of this module, static, into dir.
func goBuild(ctx context.Context, dir string, pkgs ...string) error {
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-trimpath", "-o", dir + "/"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// BuildImage packs the static binary into an image tarball tagged tag, with
// the binary as /name and its entrypoint, using hack/tools/imagebuild (as
// `make image` does for the mover). ImportImage takes the tarball to the
// node.
func BuildImage(ctx context.Context, binary, out, tag, name string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	tools := filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), "hack", "tools")
	cmd := exec.CommandContext(ctx, "go", "run", "./imagebuild", "-binary", binary, "-out", out, "-tag", tag,
		"-name", name, "-title", "blockmover test "+name, "-ca", "")
	cmd.Dir = tools
	cmd.Env = append(os.Environ(), "GONOSUMDB=k8s.io", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("imagebuild %s: %w: %s", tag, err, out)
	}
	return nil
}

// waitFor polls check every 100 ms until it returns nil, a process of the
// cluster exits, or limit passes.
func (c *Cluster) waitFor(ctx context.Context, limit time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if perr := c.exitedProcess(); perr != nil {
			return fmt.Errorf("waiting for %s: %w", what, perr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %v: %w", what, limit, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DefaultClasses creates the StorageClass and the VolumeSnapshotClass name
// of the test driver, both marked the cluster's default: volumes bound when
// their first pod is scheduled (the driver's volumes are node-local),
// deleted with their claims, as are snapshots with theirs.
func (c *Cluster) DefaultClasses(ctx context.Context, name string) error {
	kube, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	if _, err := kube.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: name, Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner:       testdriver.DefaultName,
		VolumeBindingMode: &wffc,
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("StorageClass %s: %w", name, err)
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	vsc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
		"metadata":       map[string]any{"name": name, "annotations": map[string]any{"snapshot.storage.kubernetes.io/is-default-class": "true"}},
		"driver":         testdriver.DefaultName,
		"deletionPolicy": "Delete",
	}}
	gvr := schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshotclasses"}
	if _, err := dyn.Resource(gvr).Create(ctx, vsc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("VolumeSnapshotClass %s: %w", name, err)
	}
	return nil
}

// DriverSocket is the unix socket of the node's CSI driver, reachable from
// the host ("" without Options.Kubelet).
func (c *Cluster) DriverSocket() string {
	if c.node == nil {
		return ""
	}
	return c.node.csiSock
}

// DriverStateDir is the node's CSI driver's state directory, on the
// host's filesystem: the volumes' backing files are in it ("" without
// Options.Kubelet).
func (c *Cluster) DriverStateDir() string {
	if c.node == nil {
		return ""
	}
	return c.node.csiState
}

// LoadMoverImage builds cmd/mover of this module (static) into an image
// tagged tag, as `make image` does, and imports it into the node, so that
// pods run it with any pull policy but Always.
func (c *Cluster) LoadMoverImage(ctx context.Context, tag string) error {
	if c.node == nil {
		return errors.New("testcluster: LoadMoverImage needs a cluster with Options.Kubelet")
	}
	dir, err := os.MkdirTemp(c.dir, "mover-image")
	if err != nil {
		return err
	}
	if err := goBuild(ctx, dir, "github.com/blockmover/blockmover/cmd/mover"); err != nil {
		return err
	}
	tar := filepath.Join(dir, "mover.tar")
	if err := BuildImage(ctx, filepath.Join(dir, "mover"), tar, tag, "mover"); err != nil {
		return err
	}
	return c.ImportImage(ctx, tar)
}
