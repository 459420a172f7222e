#!/usr/bin/env bash
# Builds the rest of the single-node test cluster (issue 13), beside the
# kube-apiserver and etcd of hack/install-k8s-test-tools.sh, into the same
# directory ($BLOCKMOVER_K8S_TOOLS, default $(go env GOPATH)/bin), each named
# with its version:
#
#   from k8s.io/kubernetes (hack/tools/go.mod), in one `go build` so that the
#   shared packages compile once:
#     kube-controller-manager-v1.37.2  kube-scheduler-v1.37.2
#     kubectl-v1.37.2                  kubelet-v1.37.2
#   from github.com/kubernetes-csi/external-snapshotter/v8 (hack/tools/snapshotter):
#     snapshot-controller-v8.7.0       csi-snapshotter-v8.7.0
#   from github.com/kubernetes-csi/external-provisioner/v6 (hack/tools/provisioner):
#     csi-provisioner-v6.4.0
#   from github.com/kubernetes-csi/external-snapshot-metadata (hack/tools/snapshot-metadata):
#     csi-snapshot-metadata-v0.2.0
#   from github.com/containerd/containerd/v2 (hack/tools/containerd), for the
#   kubelet:
#     containerd-v2.4.2  ctr-v2.4.2  containerd-shim-runc-v2-v2.4.2
#   from github.com/opencontainers/runc (hack/tools/runc), with cgo and
#   libseccomp (Debian's libseccomp-dev, installed when missing):
#     runc-v1.5.2
#
# and Debian's nftables when nft is missing (the node's pod network).
#
# Idempotent: builds only what is missing. Everything comes from the Go
# module proxy and Debian's packages. Builds run under `nice -n 19`. Cold (empty GOCACHE, 2 cores)
# times are in README.md.
#
# Usage: hack/install-cluster-tools.sh      (prints the directory)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/hack/tools"

# version MODFILE MODULE: the version MODFILE requires of MODULE.
version() {
	local v
	v=$(awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) { for (i = 1; i <= NF; i++) if ($i ~ /^v[0-9]/) { print $i; exit } }' "$1")
	if [[ -z "$v" ]]; then
		echo "install-cluster-tools: cannot read the version of $2 from $1" >&2
		exit 1
	fi
	echo "$v"
}

k8s_version=$(version "$tools/go.mod" k8s.io/kubernetes)
snapshotter_version=$(version "$tools/snapshotter/go.mod" github.com/kubernetes-csi/external-snapshotter/v8)
provisioner_version=$(version "$tools/provisioner/go.mod" github.com/kubernetes-csi/external-provisioner/v6)
metadata_version=$(version "$tools/snapshot-metadata/go.mod" github.com/kubernetes-csi/external-snapshot-metadata)
containerd_version=$(version "$tools/containerd/go.mod" github.com/containerd/containerd/v2)
runc_version=$(version "$tools/runc/go.mod" github.com/opencontainers/runc)

bindir=${BLOCKMOVER_K8S_TOOLS:-}
if [[ -z "$bindir" ]]; then
	bindir="$(go env GOPATH | cut -d: -f1)/bin"
fi
mkdir -p "$bindir"

# The staging modules (k8s.io/api, k8s.io/apiserver, ...) of a release are
# not all in the checksum database.
export GONOSUMDB=${GONOSUMDB:+$GONOSUMDB,}k8s.io
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

# build MODDIR VERSION LDFLAGS PKG...: builds the commands PKG... of the
# module in MODDIR in one `go build`, as $bindir/NAME-VERSION, skipping
# those that exist.
build() {
	local moddir=$1 ver=$2 ldflags=$3
	shift 3
	local pkgs=() names=() p
	for p in "$@"; do
		if [[ ! -x "$bindir/${p##*/}-$ver" ]]; then
			pkgs+=("$p")
			names+=("${p##*/}")
		fi
	done
	if ((${#pkgs[@]} == 0)); then
		return
	fi
	echo "building ${names[*]} $ver into $bindir..." >&2
	local start=$SECONDS tmp
	tmp=$(mktemp -d "$bindir/.build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd "$moddir" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
	for p in "${names[@]}"; do
		mv "$tmp/$p" "$bindir/$p-$ver"
	done
	rm -rf "$tmp"
	trap - EXIT
	echo "built ${names[*]} $ver in $((SECONDS - start))s" >&2
}

major=${k8s_version#v}
major=${major%%.*}
minor=${k8s_version#v*.}
minor=${minor%%.*}
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
build "$tools" "$k8s_version" "$k8s_ldflags" \
	k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet

build "$tools/snapshotter" "$snapshotter_version" "-s -w -X main.version=$snapshotter_version" \
	github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller \
	github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter

build "$tools/provisioner" "$provisioner_version" "-s -w -X main.version=$provisioner_version" \
	github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner

build "$tools/snapshot-metadata" "$metadata_version" "-s -w -X main.version=$metadata_version" \
	github.com/kubernetes-csi/external-snapshot-metadata/cmd/csi-snapshot-metadata

# containerd without the btrfs and devmapper snapshotters (cgo, and not used:
# the kubelet's pods run on overlayfs or native).
GOFLAGS="$GOFLAGS -tags=no_btrfs,no_devmapper" build "$tools/containerd" "$containerd_version" \
	"-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2" \
	github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr \
	github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2

# Debian's packages runc's build needs, and nftables, whose nft the test
# cluster's node uses in its pod network's own namespace (the DNAT rule of
# the kubernetes Service).
debs=()
[[ -f /usr/include/seccomp.h ]] || debs+=(libseccomp-dev)
command -v pkg-config >/dev/null || debs+=(pkg-config)
command -v nft >/dev/null || debs+=(nftables)
if ((${#debs[@]} > 0)); then
	echo "installing ${debs[*]} from Debian's packages..." >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null
fi

# runc links libseccomp statically into a cgo binary, with Go's own user and
# DNS lookups (as its releases do), so it needs no shared library at run time.
CGO_ENABLED=1 GOFLAGS="$GOFLAGS -tags=seccomp,netgo,osusergo,urfave_cli_no_docs" build "$tools/runc" "$runc_version" \
	"-s -w -X main.version=${runc_version#v} -linkmode external -extldflags -static" \
	github.com/opencontainers/runc

"$bindir/kubectl-$k8s_version" version --client >/dev/null
"$bindir/snapshot-controller-$snapshotter_version" --version >/dev/null
"$bindir/containerd-$containerd_version" --version >/dev/null
"$bindir/runc-$runc_version" --version >/dev/null
echo "$bindir"
