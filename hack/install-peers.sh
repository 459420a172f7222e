#!/usr/bin/env bash
# Builds the peers that `mover bench --peers` and hack/bench-vs-restic.sh
# compare mover with, at the versions users run today, from the Go module
# proxy, into $(go env GOBIN) or $(go env GOPATH)/bin (outside the tree),
# each named with its version:
#
#   restic-v0.19.1   go install github.com/restic/restic/cmd/restic@v0.19.1
#   kopia-v0.22.3    go install github.com/kopia/kopia@v0.22.3, or, where
#                    the proxy refuses kopia's version list, from a
#                    temporary module that requires github.com/kopia/kopia
#                    v0.22.3 (then GOPROXY=file:// on the module cache)
#
# Idempotent: builds only what is missing (or reports another version).
# Builds run under `nice -n 19`. Prints one line per peer: NAME PATH.
#
# Usage: hack/install-peers.sh [restic] [kopia]     (default: both)
set -euo pipefail

RESTIC_VERSION=v0.19.1
KOPIA_VERSION=v0.22.3

bindir=$(go env GOBIN)
if [[ -z "$bindir" ]]; then
	bindir="$(go env GOPATH | cut -d: -f1)/bin"
fi
mkdir -p "$bindir"

# built_version BIN MODULE: the version of MODULE that BIN was built from.
# "go version -m" lists the main module as <tab>mod<tab>PATH<tab>VERSION and,
# for a binary built from the temporary module below, MODULE as a dep.
built_version() {
	go version -m "$1" 2>/dev/null | awk -v m="$2" '($1 == "mod" || $1 == "dep") && $2 == m { print $3; exit }'
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# install NAME MODULE PKG VERSION: builds PKG of MODULE@VERSION as
# $bindir/NAME-VERSION, outside any module of ours (a temporary module
# requires MODULE at VERSION, so neither our go.mod nor the proxy's version
# list is involved).
install() {
	local name=$1 module=$2 pkg=$3 version=$4
	local bin="$bindir/$name-$version"
	if [[ -x "$bin" && "$(built_version "$bin" "$module")" == "$version" ]]; then
		echo "$name $bin"
		return
	fi
	echo "building $name $version into $bindir (a few minutes)..." >&2
	local start=$SECONDS dir="$tmp/$name"
	mkdir -p "$dir/out"
	(
		cd "$dir"
		export GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="$dir/out"
		if nice -n 19 go install -trimpath "$pkg@$version"; then
			exit 0
		fi
		# The proxy refuses some modules' version lists (kopia's): a
		# temporary module that requires the version by name builds it.
		echo "retrying $name from a temporary module..." >&2
		go mod init blockmover-peer-"$name" >/dev/null 2>&1
		if ! go get "$pkg@$version"; then
			# Resolve from the module cache when the proxy still refuses.
			go mod download "$module@$version"
			export GOPROXY="file://$(go env GOMODCACHE)/cache/download,$(go env GOPROXY)"
			go get "$pkg@$version"
		fi
		nice -n 19 go install -trimpath "$pkg"
	)
	mv "$dir/out/${pkg##*/}" "$bin"
	local got
	got=$(built_version "$bin" "$module")
	if [[ "$got" != "$version" ]]; then
		echo "install-peers: $bin was built from $module ${got:-unknown}, want $version" >&2
		exit 1
	fi
	echo "installed $bin in $((SECONDS - start))s" >&2
	echo "$name $bin"
}

want=("$@")
if ((${#want[@]} == 0)); then
	want=(restic kopia)
fi
for p in "${want[@]}"; do
	case $p in
	restic) install restic github.com/restic/restic github.com/restic/restic/cmd/restic "$RESTIC_VERSION" ;;
	kopia) install kopia github.com/kopia/kopia github.com/kopia/kopia "$KOPIA_VERSION" ;;
	*)
		echo "install-peers: unknown peer $p (restic, kopia)" >&2
		exit 2
		;;
	esac
done
