// snapshot-controller and csi-snapshotter
// (github.com/kubernetes-csi/external-snapshotter/v8) for the test cluster,
// built by hack/install-cluster-tools.sh. A module of its own so that the
// release builds with the dependency versions it chose, not those of
// ../go.mod.
module github.com/blockmover/blockmover/hack/tools/snapshotter

go 1.26.8

require (
	github.com/kubernetes-csi/external-snapshotter/client/v8 v8.7.0 // indirect
	github.com/kubernetes-csi/external-snapshotter/v8 v8.7.0 // indirect
)
