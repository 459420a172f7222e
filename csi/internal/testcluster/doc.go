// Package testcluster runs a real Kubernetes control plane on 127.0.0.1 for
// the csi tests, as processes (no containers, nothing beyond loopback).
//
// Start runs etcd and kube-apiserver only: RBAC on, the admission plugins
// that need controllers off, and no controllers at all. StartWith and
// Options.Controllers add kube-controller-manager (every default
// controller: job, PV binder, pvc-protection, serviceaccount and token,
// root-ca-cert-publisher, garbage collector, ...), kube-scheduler and
// snapshot-controller, with the VolumeSnapshot and VolumeGroupSnapshot v1
// CRDs installed and the API server's default admission plugins on.
// Without Options.Kubelet there is no node: pods are created and stay
// Pending.
//
// Options.Kubelet (root only) adds one node, NodeName (node.go): the real
// kubelet with containerd v2 and runc, in a mount and PID namespace of its
// own whose init is an `unshare` process. That namespace has its own /run,
// /var/lib and /var/log, copies of the sysctl files the kubelet writes, and
// iptables that fail, so nothing of the host changes; killing its init
// kills every process in it, containers and shims included, and its mounts
// go with it. The kubelet runs with failCgroupV1: false and the cgroupfs
// driver under a cgroup root of its own, containerd with
// restrict_oom_score_adj (no CAP_SYS_RESOURCE here); the sandbox image is
// cmd/pause, built and imported with `ctr images import` (ImportImage takes
// more, such as the mover's). A small CNI plugin attaches each pod with a
// veth pair to a bridge in a network namespace of the node's own, the pod
// network (198.18.0.0/15, the bridge at PodGateway): pods reach each other
// and the gateway, where ListenPods lets a test serve them (a proxy to an
// S3 server on the host's loopback, say); nothing of it is in the host's
// network namespace and it has no route out. The test CSI driver runs in the namespace (it mounts what the
// pods use), registered with the kubelet by a stand-in for
// node-driver-registrar (registrar.go, the kubelet's pluginregistration
// v1 API), with csi-provisioner, csi-snapshotter and the
// csi-snapshot-metadata sidecar outside; the sidecar serves TLS with a
// certificate of the cluster's CA and is advertised to the pods (at a
// proxy on PodGateway) in the driver's SnapshotMetadataService (audience
// SnapshotMetadataAudience). Pods reach the API server as in-cluster
// clients: the kubernetes Service's address is DNATed, in the pod
// network's namespace, to a proxy to the API server on loopback (a
// kube-proxy for that one Service). Stop
// detaches the driver's loop devices (and the kubelet's, which pin them
// while a pod uses a Block volume) and removes the cgroups; Leftovers
// reports any process, mount, loop device, cgroup or network interface
// left. A node whose process was killed before Stop loses its processes
// with it (Pdeathsig, then the end of its PID namespace); the next node to
// start sweeps up its loop devices, cgroups and directory.
//
// Credentials: a CA made per cluster (pki.go) signs the API server's
// serving certificate and one client certificate per component, as
// kubeadm does: system:kube-controller-manager, system:kube-scheduler, and
// for snapshot-controller the name of the ServiceAccount that its upstream
// RBAC (rbac-snapshot-controller.yaml, copied from external-snapshotter
// v8.7.0) binds. The administrator of Cluster.Config is a static token in
// system:masters. Cluster.Kubeconfig issues more, for components a test
// starts itself.
//
// Binaries, each named NAME-VERSION in $BLOCKMOVER_K8S_TOOLS (default
// $(go env GOPATH)/bin), outside the repository:
//
//   - hack/install-k8s-test-tools.sh (make tools, make k8s-tools):
//     kube-apiserver (k8s.io/kubernetes, hack/tools/go.mod) and etcd
//     (hack/tools/etcd/go.mod); about ten minutes cold.
//   - hack/install-cluster-tools.sh (make cluster-tools): from
//     k8s.io/kubernetes in one go build, kube-controller-manager,
//     kube-scheduler, kubectl and kubelet; snapshot-controller and
//     csi-snapshotter (external-snapshotter/v8, hack/tools/snapshotter);
//     csi-provisioner (external-provisioner/v6, hack/tools/provisioner);
//     csi-snapshot-metadata (external-snapshot-metadata,
//     hack/tools/snapshot-metadata); containerd, ctr and
//     containerd-shim-runc-v2 (hack/tools/containerd); runc, with cgo and
//     libseccomp (hack/tools/runc). Cold build times on 2 cores are in
//     README.md.
//
// Stop ends every process (SIGTERM, SIGKILL after ten seconds) and waits
// for each; a test checks that none is left. KillComponents crashes
// components of the control plane (SIGKILL) and RestartComponents starts
// them again with the same command lines (restart.go), for tests of what
// survives a control plane killed mid-operation.
package testcluster
