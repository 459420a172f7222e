#!/usr/bin/env bash
# Builds the Kubernetes test tools that the csi tests run on 127.0.0.1:
# kube-apiserver (k8s.io/kubernetes at the version hack/tools/go.mod pins) and
# etcd (go.etcd.io/etcd/server/v3 at the version hack/tools/etcd/go.mod pins).
# Both land in $BLOCKMOVER_K8S_TOOLS (default $(go env GOPATH)/bin), outside
# the repository, named with their versions:
#
#   kube-apiserver-v1.37.2   etcd-v3.5.35
#
# Idempotent: does nothing when both binaries exist. A cold build takes about
# ten minutes on 2 cores (kube-apiserver is most of it).
#
# Usage: hack/install-k8s-test-tools.sh      (prints the directory)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/hack/tools"

k8s_version=$(grep -oE 'k8s\.io/kubernetes v[0-9]+\.[0-9]+\.[0-9]+' "$tools/go.mod" | head -1 | cut -d' ' -f2)
etcd_version=$(grep -oE 'go\.etcd\.io/etcd/server/v3 v[0-9]+\.[0-9]+\.[0-9]+' "$tools/etcd/go.mod" | head -1 | cut -d' ' -f2)
if [[ -z "$k8s_version" || -z "$etcd_version" ]]; then
	echo "install-k8s-test-tools: cannot read the pinned versions from $tools/go.mod and $tools/etcd/go.mod" >&2
	exit 1
fi

bindir=${BLOCKMOVER_K8S_TOOLS:-}
if [[ -z "$bindir" ]]; then
	bindir="$(go env GOPATH | cut -d: -f1)/bin"
fi
mkdir -p "$bindir"
apiserver="$bindir/kube-apiserver-$k8s_version"
etcd="$bindir/etcd-$etcd_version"

# The staging modules (k8s.io/api, k8s.io/apiserver, ...) of a release are
# not all in the checksum database.
export GONOSUMDB=${GONOSUMDB:+$GONOSUMDB,}k8s.io
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

if [[ ! -x "$etcd" ]]; then
	echo "building etcd $etcd_version into $bindir (a minute or two)..." >&2
	start=$SECONDS
	(cd "$tools/etcd" && go build -trimpath -o "$etcd.tmp" go.etcd.io/etcd/server/v3)
	mv "$etcd.tmp" "$etcd"
	echo "built $etcd in $((SECONDS - start))s" >&2
fi

if [[ ! -x "$apiserver" ]]; then
	echo "building kube-apiserver $k8s_version into $bindir (about ten minutes cold)..." >&2
	start=$SECONDS
	minor=${k8s_version#v*.}
	minor=${minor%%.*}
	major=${k8s_version#v}
	major=${major%%.*}
	pkg=k8s.io/component-base/version
	ldflags="-s -w -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	(cd "$tools" && go build -trimpath -ldflags "$ldflags" -o "$apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
	mv "$apiserver.tmp" "$apiserver"
	echo "built $apiserver in $((SECONDS - start))s" >&2
fi

"$apiserver" --version >/dev/null
"$etcd" --version >/dev/null
echo "$bindir"
