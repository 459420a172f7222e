#!/usr/bin/env bash
# A short run of every fuzz target in the module (`make fuzz`): each
# `func FuzzX` in a _test.go file, found by name, so a new target is run
# without being listed anywhere. FUZZTIME (default 20s) per target.
#
# Go 1.26's fuzz coordinator can fail a run that found nothing with a bare
# "context deadline exceeded" when -fuzztime ends while a worker is busy
# (golang/go#75804, fixed in Go 1.27; seen here on FuzzIndex in 2 runs of 10).
# Such a run, and only such a run (no "Failing input written", no other
# failure line), is run once more; a second one fails like any failure.
# A real finding writes its input under the package's testdata/fuzz/ and
# fails at once.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-20s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# deadline_only LOG: the run failed with the toolchain's deadline error
# and nothing else.
deadline_only() {
	grep -q '^    context deadline exceeded$' "$1" &&
		! grep -q 'Failing input written\|panic:\|_test\.go:[0-9]*:' "$1"
}

targets=$(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+\(' . |
	sed -E 's#^\./(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]+)\($#./\1 \2#' | sort -u)
[ -n "$targets" ] || { echo "fuzz: no targets found" >&2; exit 1; }
n=0
while read -r pkg t; do
	n=$((n + 1))
	for try in 1 2; do
		if $GO test -run XXX -fuzz "^$t\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
			echo "ok   $pkg $t"
			break
		fi
		if [ "$try" = 1 ] && deadline_only "$log"; then
			echo "fuzz: $pkg $t: the toolchain's -fuzztime deadline error (golang/go#75804), nothing found: once more" >&2
			continue
		fi
		cat "$log" >&2
		echo "FAIL $pkg $t" >&2
		exit 1
	done
done <<<"$targets"
echo "fuzz: $n targets, $FUZZTIME each"
