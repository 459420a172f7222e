#!/usr/bin/env bash
# Builds the mover image tarball without a container engine: a static mover
# (CGO_ENABLED=0) in one layer on nothing, written by hack/tools/imagebuild
# (go-containerregistry) in the format `docker load` and
# `kind load image-archive` read.
#
# Usage: hack/build-image.sh [OUT.tar [TAG]]   (default out/mover-image.tar blockmover/mover:dev)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/out/mover-image.tar}
tag=${2:-blockmover/mover:dev}
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
arch=$(go env GOARCH)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$(dirname "$out")"
version=$(cd "$root" && git describe --always --dirty 2>/dev/null || true)
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$work/mover" ./cmd/mover)
ca=/etc/ssl/certs/ca-certificates.crt
[[ -f $ca ]] || ca=""
version=$(git -C "$root" describe --always --dirty 2>/dev/null || echo dev)
(cd "$root/hack/tools" && GONOSUMDB=${GONOSUMDB:+$GONOSUMDB,}k8s.io go run ./imagebuild \
	-binary "$work/mover" -out "$out" -tag "$tag" -ca "$ca" -arch "$arch" -version "$version")
echo "$out"
