// Command localcluster starts and stops the test cluster of package
// testcluster as processes on this machine, for people who want to try
// `mover k8s` by hand (make cluster, make cluster-down): etcd,
// kube-apiserver, the controllers, and the node with the real kubelet,
// containerd, the test CSI driver and its sidecars. It must run as root.
//
//	localcluster up   -dir DIR [-image TAR]...   starts it in the background, waits until it is ready,
//	                                             writes DIR/env (KUBECONFIG, kubectl in PATH, S3) and prints it
//	localcluster down -dir DIR                   stops it and reports anything left behind
//
// With versitygw installed (hack/install-versitygw.sh, part of make tools)
// it also serves S3 for a repository: versitygw on a port of 127.0.0.1 with
// the bucket "blockmover", which the pods reach through a proxy at the pod
// network's gateway (testcluster.PodGateway). up prints both endpoints.
//
// The cluster runs in a background process of its own (its PID in
// DIR/localcluster.pid, its log in DIR/localcluster.log); down sends it
// SIGTERM and waits until it has stopped everything.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/blockmover/blockmover/csi/internal/testcluster"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
)

// serveEnv marks the background process that runs the cluster.
const serveEnv = "BLOCKMOVER_LOCALCLUSTER_SERVE"

type imageList []string

func (l *imageList) String() string     { return strings.Join(*l, ",") }
func (l *imageList) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: localcluster up|down -dir DIR [-image TAR]")
	}
	fs := flag.NewFlagSet("localcluster "+args[0], flag.ContinueOnError)
	dir := fs.String("dir", "out/cluster", "directory of the cluster's state, kubeconfig, PID and log")
	var images imageList
	fs.Var(&images, "image", "image tarball to import into the node's containerd (repeatable), e.g. out/mover-image.tar")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	switch {
	case args[0] == "up" && os.Getenv(serveEnv) == "1":
		return serve(abs, images)
	case args[0] == "up":
		return up(abs, images, stdout)
	case args[0] == "down":
		return down(abs, stdout)
	}
	return fmt.Errorf("unknown command %q: up or down", args[0])
}

// up starts serve in a background process of its own session and waits
// until it reports the cluster ready (DIR/ready) or exits.
func up(dir string, images imageList, stdout io.Writer) error {
	if pid, err := readPID(dir); err == nil && syscall.Kill(pid, 0) == nil {
		return fmt.Errorf("a cluster is already running in %s (PID %d): localcluster down -dir %s", dir, pid, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	state := filepath.Join(dir, "state")
	if err := os.RemoveAll(state); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, "ready"))
	logf, err := os.Create(filepath.Join(dir, "localcluster.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"up", "-dir", dir}
	for _, im := range images {
		abs, err := filepath.Abs(im)
		if err != nil {
			return err
		}
		args = append(args, "-image", abs)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), serveEnv+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the cluster: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(5 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			break
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("the cluster exited (%v):\n%s", err, tail(log))
		case <-deadline:
			cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("the cluster is not ready after 5 minutes; see %s", logf.Name())
		case <-time.After(200 * time.Millisecond):
		}
	}
	kubectl, err := testcluster.ClusterTool("kubectl")
	if err != nil {
		return err
	}
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.Remove(filepath.Join(dir, "bin", "kubectl"))
	if err := os.Symlink(kubectl, filepath.Join(dir, "bin", "kubectl")); err != nil {
		return err
	}
	env := fmt.Sprintf("export KUBECONFIG=%s\nexport PATH=%s:$PATH  # kubectl\n",
		filepath.Join(dir, "kubeconfig"), filepath.Join(dir, "bin"))
	if s3, err := os.ReadFile(filepath.Join(dir, "s3.env")); err == nil {
		env += string(s3)
	}
	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(env), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# node %s, StorageClass and VolumeSnapshotClass %q (driver %s); log: %s\n# in your shell: . %s\n%s# stop it with: make cluster-down\n",
		testcluster.NodeName, "blockmover", "blockmover.csi.test", logf.Name(), filepath.Join(dir, "env"), env)
	return nil
}

// serve runs the cluster until SIGTERM or SIGINT, then stops it.
func serve(dir string, images imageList) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := os.WriteFile(filepath.Join(dir, "localcluster.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(dir, "localcluster.pid"))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o755); err != nil {
		return err
	}
	c, err := testcluster.StartWith(ctx, filepath.Join(dir, "state"), testcluster.Options{Kubelet: true})
	if err != nil {
		return err
	}
	defer func() {
		c.Stop()
		if err := c.Leftovers(); err != nil {
			fmt.Fprintln(os.Stderr, "localcluster: left behind:", err)
		} else {
			fmt.Fprintln(os.Stderr, "localcluster: stopped, nothing left behind")
		}
		os.Remove(filepath.Join(dir, "ready"))
	}()
	for _, im := range images {
		if err := c.ImportImage(ctx, im); err != nil {
			return err
		}
	}
	if err := c.DefaultClasses(ctx, "blockmover"); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, "s3.env"))
	if err := serveS3(c, dir); err != nil {
		return err
	}
	if err := c.WriteKubeconfig(filepath.Join(dir, "kubeconfig")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "localcluster: ready")
	<-sigs
	fmt.Fprintln(os.Stderr, "localcluster: stopping")
	return nil
}

// down stops the cluster that up started in dir and waits until its
// process has exited.
func down(dir string, stdout io.Writer) error {
	pid, err := readPID(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stdout, "no cluster running in %s\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			os.Remove(filepath.Join(dir, "localcluster.pid"))
			fmt.Fprintf(stdout, "no cluster running in %s (stale PID %d)\n", dir, pid)
			return nil
		}
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("PID %d still running after 2 minutes", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "localcluster.log"))
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	fmt.Fprintln(stdout, lines[len(lines)-1])
	return nil
}

func readPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "localcluster.pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", filepath.Join(dir, "localcluster.pid"), err)
	}
	return pid, nil
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// bucket is the bucket that serveS3 makes.
const bucket = "blockmover"

// serveS3 starts versitygw on a free port of 127.0.0.1 with the bucket
// "blockmover" (a directory of its posix backend), proxies the pod
// network's gateway to it, and writes the settings to DIR/s3.env. Without
// versitygw it writes a note there instead. The server ends with this
// process (Pdeathsig), the proxy with the cluster.
func serveS3(c *testcluster.Cluster, dir string) error {
	env := filepath.Join(dir, "s3.env")
	bin, err := s3test.VersitygwPath()
	if err != nil {
		return os.WriteFile(env, []byte("# no S3: "+err.Error()+" (hack/install-versitygw.sh installs it)\n"), 0o644)
	}
	root, versions := filepath.Join(dir, "state", "s3", "root"), filepath.Join(dir, "state", "s3", "versions")
	for _, d := range []string{filepath.Join(root, bucket), versions} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--access", s3test.AccessKey, "--secret", s3test.SecretKey, "--region", s3test.Region,
		"--port", addr, "--quiet", "posix", "--versioning-dir", versions, root)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting versitygw: %w", err)
	}
	go cmd.Wait()
	for i := 0; ; i++ {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if i == 100 {
			return fmt.Errorf("versitygw on %s: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pods, err := c.ProxyToPods(addr)
	if err != nil {
		return err
	}
	return os.WriteFile(env, fmt.Appendf(nil, `# S3 (versitygw, bucket %[1]q) for you, and for pods at $PODS_AWS_ENDPOINT_URL (for the mover Job's Secret):
export AWS_ACCESS_KEY_ID=%[4]s AWS_SECRET_ACCESS_KEY=%[5]s AWS_REGION=%[6]s AWS_ENDPOINT_URL=http://%[2]s
export PODS_AWS_ENDPOINT_URL=http://%[3]s
`, bucket, addr, pods, s3test.AccessKey, s3test.SecretKey, s3test.Region), 0o644)
}
