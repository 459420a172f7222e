// Csi-provisioner (github.com/kubernetes-csi/external-provisioner/v6) for the
// test cluster, built by hack/install-cluster-tools.sh. A module of its own so
// that the release builds with the dependency versions it chose, not those of
// ../go.mod.
module github.com/blockmover/blockmover/hack/tools/provisioner

go 1.26.8

require github.com/kubernetes-csi/external-provisioner/v6 v6.4.0 // indirect
