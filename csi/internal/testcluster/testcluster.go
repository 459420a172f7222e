package testcluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// Pinned versions: hack/install-k8s-test-tools.sh reads them from
// hack/tools/go.mod and hack/tools/etcd/go.mod, and a test checks that these
// agree.
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "v3.5.35"
)

// SkipEnv, set to 1, skips the tests that need the binaries when they are
// missing, instead of failing them.
const SkipEnv = "BLOCKMOVER_SKIP_K8S"

// ErrNoBinaries is returned when the pinned binaries are not installed.
var ErrNoBinaries = errors.New("kube-apiserver and etcd test binaries not found")

// Binaries returns the paths of the pinned kube-apiserver and etcd.
func Binaries() (apiserver, etcd string, err error) {
	dir, err := toolsDir()
	if err != nil {
		return "", "", err
	}
	apiserver = filepath.Join(dir, "kube-apiserver-"+KubernetesVersion)
	etcd = filepath.Join(dir, "etcd-"+EtcdVersion)
	for _, p := range []string{apiserver, etcd} {
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("%w: %s is missing; run `make tools` (hack/install-k8s-test-tools.sh, about ten minutes once), or set %s=1 to skip", ErrNoBinaries, p, SkipEnv)
		}
	}
	return apiserver, etcd, nil
}

// Options chooses what runs beside etcd and kube-apiserver.
type Options struct {
	// Controllers runs kube-controller-manager (every default controller),
	// kube-scheduler and snapshot-controller, installs the VolumeSnapshot
	// and VolumeGroupSnapshot CRDs, and turns on the API server's default
	// admission plugins (ServiceAccount, StorageObjectInUseProtection,
	// DefaultStorageClass, ...), which a cluster without those controllers
	// must leave off. The binaries come from hack/install-cluster-tools.sh
	// (make cluster-tools).
	Controllers bool

	// Kubelet (which implies Controllers) adds the node NodeName: a real
	// kubelet with containerd and runc, the test CSI driver registered
	// with it, and the driver's csi-provisioner and csi-snapshotter; the
	// API server authorizes the kubelet with the Node authorizer and
	// NodeRestriction. It needs root. See node.go.
	Kubelet bool
}

// toolsDir is where the install scripts put the binaries:
// $BLOCKMOVER_K8S_TOOLS, default $(go env GOPATH)/bin.
func toolsDir() (string, error) {
	if dir := os.Getenv("BLOCKMOVER_K8S_TOOLS"); dir != "" {
		return dir, nil
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOPATH: %w", err)
	}
	return filepath.Join(strings.Split(strings.TrimSpace(string(out)), string(os.PathListSeparator))[0], "bin"), nil
}

// Cluster is a running etcd and kube-apiserver, and the controllers that
// Options asked for.
type Cluster struct {
	// Config is an administrator's (system:masters) client config.
	Config *rest.Config
	dir    string
	pki    *pki
	saKey  string // the ServiceAccount signing key (PEM)
	procs  []*exec.Cmd
	exited []chan struct{}
	logs   []*tailBuffer
	names  []string
	node   *node
	// snapshotMetadataAddr is the sidecar's address on the host.
	snapshotMetadataAddr string
	// stopErr is what Stop could not clean up (Leftovers reports it).
	stopErr error
	mu      sync.Mutex
}

// Start runs etcd and kube-apiserver in dir and waits until the API server
// is ready. Stop ends them.
func Start(ctx context.Context, dir string) (*Cluster, error) {
	return StartWith(ctx, dir, Options{})
}

// StartWith runs etcd, kube-apiserver and what o asks for in dir, and
// waits until each is ready. Stop ends them all.
func StartWith(ctx context.Context, dir string, o Options) (_ *Cluster, err error) {
	apiserverBin, etcdBin, err := Binaries()
	if err != nil {
		return nil, err
	}
	var controllerBins, nodeBins map[string]string
	if o.Kubelet {
		o.Controllers = true
		if nodeBins, err = nodeBinaries(); err != nil {
			return nil, err
		}
	}
	if o.Controllers {
		if controllerBins, err = controllerBinaries(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{dir: dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.Logs())
			c.Stop()
		}
	}()
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if err := c.start(etcdBin, "--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return nil, err
	}

	// A ServiceAccount signing key, and a static token for the admin.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	keyFile := filepath.Join(dir, "sa.key")
	c.saKey = keyFile
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return nil, err
	}
	token := rand.Text()
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(token+",admin,admin-uid,system:masters\n"), 0o600); err != nil {
		return nil, err
	}
	// A CA for the serving certificate and the components' client
	// certificates.
	if c.pki, err = newPKI(filepath.Join(dir, "pki")); err != nil {
		return nil, err
	}
	servingCert, servingKey, err := c.pki.serving("apiserver")
	if err != nil {
		return nil, err
	}
	port := ports[2]
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--tls-cert-file=" + servingCert, "--tls-private-key-file=" + servingKey,
		"--client-ca-file=" + c.pki.CAFile,
		"--authorization-mode=" + map[bool]string{false: "RBAC", true: "Node,RBAC"}[o.Kubelet],
		"--token-auth-file=" + tokenFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + keyFile, "--service-account-signing-key-file=" + keyFile,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--enable-priority-and-fairness=false",
		"--endpoint-reconciler-type=none",
		"--v=0",
	}
	if o.Kubelet {
		// The API server reaches the kubelet (logs, exec) at the node's
		// InternalIP, with a client certificate of this CA.
		cert, key, err := c.pki.client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
		if err != nil {
			return nil, err
		}
		args = append(args, "--enable-admission-plugins=NodeRestriction",
			"--kubelet-preferred-address-types=InternalIP",
			"--kubelet-client-certificate="+cert, "--kubelet-client-key="+key)
	}
	if !o.Controllers {
		// Without the controllers that answer them, these plugins only
		// get in the way (no ServiceAccount controller creates "default").
		args = append(args, "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition,Priority,DefaultTolerationSeconds,DefaultStorageClass,StorageObjectInUseProtection,PersistentVolumeClaimResize,RuntimeClass,DefaultIngressClass")
	}
	if err := c.start(apiserverBin, args...); err != nil {
		return nil, err
	}
	c.Config = &rest.Config{
		Host:            fmt.Sprintf("https://127.0.0.1:%d", port),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.pki.CAPEM()},
		QPS:             200, Burst: 400,
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	if o.Controllers {
		if err := c.startControllers(ctx, controllerBins); err != nil {
			return nil, err
		}
	}
	if o.Kubelet {
		if err := c.startNode(ctx, nodeBins); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) start(bin string, args ...string) error {
	return c.startCmd(exec.Command(bin, args...), filepath.Base(bin))
}

// startCmd starts cmd as a process of the cluster, its output kept under
// name for Logs.
func (c *Cluster) startCmd(cmd *exec.Cmd, name string) error {
	log := &tailBuffer{}
	// The whole output also goes to a file for LogLines (a restarted
	// component appends to its file).
	if err := os.MkdirAll(filepath.Join(c.dir, "logs"), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(c.dir, "logs", name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	w := &lockedWriter{mu: &c.mu, w: io.MultiWriter(log, f)}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		c.mu.Lock()
		f.Close()
		c.mu.Unlock()
		close(done)
	}()
	c.procs = append(c.procs, cmd)
	c.exited = append(c.exited, done)
	c.logs = append(c.logs, log)
	c.names = append(c.names, name)
	return nil
}

// tailBuffer keeps the last 64 to 128 KiB written to it: the controllers
// log for as long as the tests run.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 128<<10 {
		t.b = append(t.b[:0], t.b[len(t.b)-64<<10:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Logs returns the tail of what the servers printed.
func (c *Cluster) Logs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for i, l := range c.logs {
		s := l.String()
		if len(s) > 4000 {
			s = "..." + s[len(s)-4000:]
		}
		fmt.Fprintf(&b, "--- %s:\n%s\n", c.names[i], s)
	}
	return b.String()
}

// LogLines returns, for each component, the last max lines of its whole
// output that contain substr (a test's namespace, an object's name): what
// the controllers did with one test's objects, however long the cluster
// has run.
func (c *Cluster) LogLines(substr string, max int) string {
	c.mu.Lock()
	names := slices.Compact(slices.Sorted(slices.Values(c.names)))
	c.mu.Unlock()
	var b strings.Builder
	for _, name := range names {
		f, err := os.Open(filepath.Join(c.dir, "logs", name+".log"))
		if err != nil {
			continue
		}
		var lines []string
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), substr) {
				lines = append(lines, sc.Text())
				if len(lines) > 2*max {
					lines = append(lines[:0], lines[len(lines)-max:]...)
				}
			}
		}
		f.Close()
		if len(lines) > max {
			lines = lines[len(lines)-max:]
		}
		if len(lines) > 0 {
			fmt.Fprintf(&b, "--- %s (%d lines naming %q):\n%s\n", name, len(lines), substr, strings.Join(lines, "\n"))
		}
	}
	return b.String()
}

func (c *Cluster) waitReady(ctx context.Context) error {
	return c.waitHealthy(ctx, c.Config.Host+"/readyz", c.Config.BearerToken, 90*time.Second)
}

// exitedProcess returns an error naming a server or controller that has
// exited.
func (c *Cluster) exitedProcess() error {
	for i := range c.procs {
		select {
		case <-c.exited[i]:
			return fmt.Errorf("%s exited (%v)", c.names[i], c.procs[i].ProcessState)
		default:
		}
	}
	return nil
}

// insecureTransport is for health checks only: they carry no credentials
// (the readiness check's admin token aside, sent to the server just
// started on loopback).
func insecureTransport() *http.Transport {
	return &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
}

// Stop ends the node (see node.stop), then the controllers and the
// servers, each with SIGTERM and, after ten seconds, SIGKILL, and waits
// for them to exit. Leftovers tells whether anything is left.
func (c *Cluster) Stop() {
	if c.node != nil {
		c.stopErr = c.node.stop()
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		p, done := c.procs[i], c.exited[i]
		p.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
}

// Leftovers reports what Stop could not clean up and, with a node, any
// mount, loop device, cgroup or network interface of it still there.
func (c *Cluster) Leftovers() error {
	errs := []error{c.stopErr}
	if c.node != nil {
		errs = append(errs, c.node.leftovers())
	}
	return errors.Join(errs...)
}

// WriteKubeconfig writes a kubeconfig of Config (the administrator) to
// path, for kubectl.
func (c *Cluster) WriteKubeconfig(path string) error {
	ca := filepath.Join(filepath.Dir(path), "ca.crt")
	if err := os.WriteFile(ca, c.pki.CAPEM(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(path, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: blockmover, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: blockmover, context: {cluster: blockmover, user: admin}}]
current-context: blockmover
`, c.Config.Host, ca, c.Config.BearerToken), 0o600)
}

// PIDs are the process IDs of the servers and controllers, for a test
// that checks none is left after Stop.
func (c *Cluster) PIDs() []int {
	var pids []int
	for _, p := range c.procs {
		pids = append(pids, p.Process.Pid)
	}
	return pids
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRDs creates the CustomResourceDefinitions in the YAML files and
// waits until they are established.
func (c *Cluster) InstallCRDs(ctx context.Context, files ...string) error {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var u unstructured.Unstructured
			if err := dec.Decode(&u.Object); err == io.EOF {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if u.GetKind() != "CustomResourceDefinition" {
				continue
			}
			if _, err := dyn.Resource(crdGVR).Create(ctx, &u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("%s: %w", f, err)
			}
			names = append(names, u.GetName())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range names {
		for {
			u, err := dyn.Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if established(u) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CRD %s not established", n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}
