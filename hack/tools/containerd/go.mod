// containerd, ctr and containerd-shim-runc-v2
// (github.com/containerd/containerd/v2) for the test cluster's kubelet, built
// by hack/install-cluster-tools.sh. A module of its own so that the release
// builds with the dependency versions it chose, not those of ../go.mod.
module github.com/blockmover/blockmover/hack/tools/containerd

go 1.26.8

require github.com/containerd/containerd/v2 v2.4.2 // indirect
