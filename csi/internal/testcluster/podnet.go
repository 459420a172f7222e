package testcluster

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PodGateway is the address of the pod network's bridge: every pod of the
// node reaches it (ListenPods serves there), and the pods reach each other
// through it, in 198.18.0.0/15 (the range set aside for testing). Nothing
// of the pod network is in the host's network namespace, and it has no
// route out.
const PodGateway = "198.18.0.1"

// The Services' range (the API server's --service-cluster-ip-range) and
// the "kubernetes" Service's address in it.
const (
	serviceCIDR         = "10.96.0.0/24"
	kubernetesServiceIP = "10.96.0.1"
)

// cniPlugin is the node's CNI plugin: a veth pair from the pod's network
// namespace (eth0, the next free address of 198.18.0.0/15) to the bridge of
// the pod network (nsInitScript), and a route to the Services' range
// through the gateway (see podAPIAccess). The pair goes with the pod's
// namespace.
const cniPlugin = `#!/bin/bash
set -eu
net=/proc/$(cat /run/podnet.pid)/ns/net
peer=v${CNI_CONTAINERID:0:12}
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}' ;;
ADD)
	cat >/dev/null
	exec 9>/run/podnet.lock
	flock 9
	n=$(cat /run/podnet.next)
	echo $((n + 1)) >/run/podnet.next
	flock -u 9
	ip=198.$((18 + n / 65536)).$((n / 256 % 256)).$((n % 256))
	nsenter --net="$CNI_NETNS" ip link add "$CNI_IFNAME" type veth peer name "$peer"
	nsenter --net="$CNI_NETNS" ip link set "$peer" netns "$(cat /run/podnet.pid)"
	nsenter --net="$net" ip link set "$peer" master br0 up
	nsenter --net="$CNI_NETNS" ip addr add "$ip/15" dev "$CNI_IFNAME"
	nsenter --net="$CNI_NETNS" ip link set "$CNI_IFNAME" up
	nsenter --net="$CNI_NETNS" ip route add ` + serviceCIDR + ` via ` + PodGateway + ` dev "$CNI_IFNAME"
	printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"address":"%s/15","gateway":"%s","interface":0}]}\n' "$CNI_IFNAME" "$CNI_NETNS" "$ip" "` + PodGateway + `"
	;;
DEL)
	cat >/dev/null
	nsenter --net="$net" ip link del "$peer" 2>/dev/null || true
	;;
*) cat >/dev/null ;;
esac
`

const cniConf = `{"cniVersion":"1.0.0","name":"blockmover","plugins":[{"type":"blockmover-veth"}]}
`

// ListenPods listens on PodGateway:port (0: a free port) in the pod
// network, for a server of the test that the node's pods reach there,
// such as a proxy to an S3 server on the host's loopback. The listener's
// socket lives in the pod network; the test process serves it as any
// other. It needs Options.Kubelet.
func (c *Cluster) ListenPods(port int) (net.Listener, error) {
	if c.node == nil {
		return nil, errors.New("testcluster: ListenPods needs a cluster with Options.Kubelet")
	}
	ns, err := c.node.podNetwork()
	if err != nil {
		return nil, err
	}
	type result struct {
		l   net.Listener
		err error
	}
	done := make(chan result, 1)
	// A locked thread enters the pod network for the listen and returns
	// to its own network namespace. Should that fail, the thread stays
	// locked and the runtime ends it with the goroutine, so nothing else
	// ever runs in the pod network. (Ending threads is not the normal way:
	// a child process started from that thread with Pdeathsig, as the
	// cluster's are, would be killed with it.)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer self.Close()
		f, err := os.Open(ns)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("entering the pod network: %w", err)}
			return
		}
		l, err := net.Listen("tcp", net.JoinHostPort(PodGateway, strconv.Itoa(port)))
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{l, err}
	}()
	r := <-done
	return r.l, r.err
}

// podAPIAccess lets pods reach the API server as in-cluster clients do,
// at the "kubernetes" Service (https://10.96.0.1:443, a name of the API
// server's certificate), standing in for kube-proxy for that one Service:
// a proxy from the pod network to the API server on the host's loopback,
// and a DNAT rule in the pod network's own namespace from the Service's
// address to it.
func (c *Cluster) podAPIAccess(ctx context.Context) error {
	addr, err := c.ProxyToPods(strings.TrimPrefix(c.Config.Host, "https://"))
	if err != nil {
		return err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ns, err := c.node.podNetwork()
	if err != nil {
		return err
	}
	rules := fmt.Sprintf(`table ip blockmover {
	chain services {
		type nat hook prerouting priority dstnat;
		ip daddr %s tcp dport 443 dnat to %s:%s
	}
}
`, kubernetesServiceIP, PodGateway, port)
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("the pod network's rule for the kubernetes Service: %w: %s", err, out)
	}
	return nil
}

// ProxyToPods serves the TCP address target of the host (an S3 server on
// 127.0.0.1, say) to the node's pods: it returns the address on
// PodGateway where they reach it. The proxy runs in the test process until
// Stop.
func (c *Cluster) ProxyToPods(target string) (string, error) {
	l, err := c.ListenPods(0)
	if err != nil {
		return "", err
	}
	c.node.listeners = append(c.node.listeners, l)
	go proxy(l, target)
	return l.Addr().String(), nil
}

// proxy forwards the connections that l accepts to the TCP address target
// until l is closed.
func proxy(l net.Listener, target string) {
	for {
		in, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer in.Close()
			out, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer out.Close()
			go func() {
				io.Copy(out, in)
				out.(*net.TCPConn).CloseWrite()
			}()
			io.Copy(in, out)
		}()
	}
}

// podNetwork returns the path of the pod network's namespace, as the host
// sees it: the child of the init whose network namespace differs.
func (n *node) podNetwork() (string, error) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return "", err
	}
	kids, err := children(n.nsInit)
	if err != nil {
		return "", err
	}
	for _, k := range kids {
		p := fmt.Sprintf("/proc/%d/ns/net", k)
		if ns, err := os.Readlink(p); err == nil && ns != self {
			return p, nil
		}
	}
	return "", errors.New("testcluster: the pod network's namespace is gone")
}
