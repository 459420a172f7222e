#!/usr/bin/env bash
# Installs versitygw, the S3 server the tests of repo/backend/s3 run against,
# into $(go env GOBIN) or $(go env GOPATH)/bin. Idempotent: does nothing when
# the binary there was already built from the pinned version.
#
# Usage: hack/install-versitygw.sh        (prints the binary's path)
set -euo pipefail

VERSION=v1.8.0
MODULE=github.com/versity/versitygw

bindir=$(go env GOBIN)
if [[ -z "$bindir" ]]; then
	bindir="$(go env GOPATH | cut -d: -f1)/bin"
fi
bin="$bindir/versitygw"

installed_version() {
	# "go version -m" lists the main module as: <tab>mod<tab>PATH<tab>VERSION<tab>SUM
	go version -m "$bin" 2>/dev/null | awk -v m="$MODULE" '$1 == "mod" && $2 == m { print $3 }'
}

if [[ -x "$bin" && "$(installed_version)" == "$VERSION" ]]; then
	echo "$bin"
	exit 0
fi

echo "installing $MODULE@$VERSION into $bindir (takes a minute or two)..." >&2
start=$SECONDS
# Build outside any module so the project's go.mod is neither read nor changed.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
if ! GOFLAGS=-mod=mod go install "$MODULE/cmd/versitygw@$VERSION"; then
	# A proxy whose version list lags can still serve the pinned version
	# by name: fetch it, then install from the module cache.
	echo "retrying through the module cache..." >&2
	go mod download "$MODULE@$VERSION"
	GOFLAGS=-mod=mod GOPROXY="file://$(go env GOMODCACHE)/cache/download,$(go env GOPROXY)" \
		go install "$MODULE/cmd/versitygw@$VERSION"
fi

got=$(installed_version)
if [[ "$got" != "$VERSION" ]]; then
	echo "install-versitygw: $bin reports version '${got:-unknown}', want $VERSION" >&2
	exit 1
fi
echo "installed $bin in $((SECONDS - start))s" >&2
echo "$bin"
