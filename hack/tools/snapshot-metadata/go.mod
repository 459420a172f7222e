// The csi-snapshot-metadata sidecar
// (github.com/kubernetes-csi/external-snapshot-metadata) for the test cluster,
// built by hack/install-cluster-tools.sh. A module of its own so that the
// release builds with the dependency versions it chose, not those of
// ../go.mod.
module github.com/blockmover/blockmover/hack/tools/snapshot-metadata

go 1.26.8

require github.com/kubernetes-csi/external-snapshot-metadata v0.2.0 // indirect
