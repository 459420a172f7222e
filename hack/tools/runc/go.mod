// runc (github.com/opencontainers/runc) for the test cluster's containerd,
// built by hack/install-cluster-tools.sh with cgo and libseccomp. A module
// of its own so that the release builds with the dependency versions it
// chose, not those of ../go.mod.
module github.com/blockmover/blockmover/hack/tools/runc

go 1.26.8

require github.com/opencontainers/runc v1.5.2 // indirect
