#!/usr/bin/env bash
# Builds the Velero server and CLI, and its object-store plugin for S3, from
# the Go module proxy into $(go env GOBIN) or $(go env GOPATH)/bin (outside
# the tree), each named with its version, static (CGO_ENABLED=0) so that a
# pod of the test cluster can run them from a hostPath:
#
#   velero-v1.18.3                   github.com/vmware-tanzu/velero/cmd/velero
#   velero-plugin-for-aws-v1.14.3    github.com/vmware-tanzu/velero-plugin-for-aws
#
# Each is built inside a copy of its own module (go install MODULE@VERSION
# refuses modules with replace directives, and Velero's go.mod has one, for
# kopia). One deviation from the released go.mod, where the module proxy
# this machine reaches lacks a version: k8s.io/cli-runtime v0.33.12 (403
# "not available"; the proxy has v0.33.0, .2, .4 and .13) is raised to
# v0.33.13, which raises the k8s.io modules it shares to v0.33.13 — a patch
# release of the same minor. The script says so when it does it.
#
# Idempotent: builds only what is missing. Builds run under `nice -n 19`.
# Prints one line per binary: NAME PATH.
#
# Usage: hack/install-velero.sh
set -euo pipefail

VELERO_VERSION=v1.18.3
AWS_PLUGIN_VERSION=v1.14.3

bindir=$(go env GOBIN)
if [[ -z "$bindir" ]]; then
	bindir="$(go env GOPATH | cut -d: -f1)/bin"
fi
mkdir -p "$bindir"
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT

# build NAME MODULE VERSION PKG: builds PKG (relative to the module's root)
# of MODULE@VERSION as $bindir/NAME-VERSION.
build() {
	local name=$1 module=$2 version=$3 pkg=$4
	local bin="$bindir/$name-$version"
	if [[ -x "$bin" ]]; then
		echo "$name $bin"
		return
	fi
	echo "building $name $version into $bindir (several minutes)..." >&2
	local dir
	dir=$(GOFLAGS=-mod=mod go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	if [[ -z "$dir" ]]; then
		echo "$module@$version: not in the module proxy" >&2
		return 1
	fi
	cp -r "$dir" "$tmp/$name"
	chmod -R u+w "$tmp/$name"
	(
		cd "$tmp/$name"
		export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
		if grep -q 'k8s.io/cli-runtime v0.33.12' go.mod && ! go mod download k8s.io/cli-runtime@v0.33.12 2>/dev/null; then
			echo "$name: k8s.io/cli-runtime v0.33.12 is not in the module proxy; building with v0.33.13" >&2
			go mod edit -require k8s.io/cli-runtime@v0.33.13
		fi
		nice -n 19 go build -trimpath -o "$bin.tmp" "./$pkg"
	)
	mv "$bin.tmp" "$bin"
	echo "$name $bin"
}

build velero github.com/vmware-tanzu/velero "$VELERO_VERSION" cmd/velero
build velero-plugin-for-aws github.com/vmware-tanzu/velero-plugin-for-aws "$AWS_PLUGIN_VERSION" velero-plugin-for-aws
