#!/usr/bin/env bash
# mover against restic on one image, in the same run: interleaved rounds
# (the order alternates), warm cache for both, repositories and restore
# targets under $WORK (tmpfs by default, to take the disk out of the
# picture). Prints one line per run and a summary with medians and ratios.
#
#   hack/bench-vs-restic.sh                 # 4 GiB image, 3 rounds
#   SIZE=256MiB ROUNDS=1 hack/bench-vs-restic.sh
#   IMG=/path/to/image hack/bench-vs-restic.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-4GiB}
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-/dev/shm/bench-vs-restic}
IMG=${IMG:-/tmp/bench-vs-restic-$SIZE.img}

command -v restic >/dev/null || { apt-get update -qq && apt-get install -y -qq restic; }
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }
go build -o bin/mover ./cmd/mover
M=$PWD/bin/mover
[ -f "$IMG" ] || $M generate -q --size "$SIZE" --seed 7 --zero 0.4 --file 0.3 --duplicate 0.1 "$IMG"

export MOVER_PASSWORD=bench RESTIC_PASSWORD=bench
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
size=$(stat -c %s "$IMG")
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r); $(restic version | cut -d' ' -f1-2); image $IMG ($size bytes)"
timed() { # prints "wall user sys maxrss_kb"
	/usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
	cat "$WORK/time"
}
results=$WORK/results
: >"$results"
for r in $(seq 1 "$ROUNDS"); do
	order="mover restic"
	(( r % 2 == 0 )) && order="restic mover"
	for tool in $order; do
		rm -rf "$WORK/repo" "$WORK/out"
		mkdir -p "$WORK/out"
		cat "$IMG" >/dev/null
		if [ "$tool" = mover ]; then
			$M init -q --repo "$WORK/repo" >/dev/null
			b=$(timed "$M" export -q --keep-cache --repo "$WORK/repo" --source "$IMG" --name v)
			rs=$(du -sb "$WORK/repo" | cut -f1)
			rr=$(timed "$M" import -q --repo "$WORK/repo" --snapshot latest --target "$WORK/out/img")
			cmp "$IMG" "$WORK/out/img"
		else
			restic init -q -r "$WORK/repo" >/dev/null
			b=$(timed restic backup -q -r "$WORK/repo" "$IMG")
			rs=$(du -sb "$WORK/repo" | cut -f1)
			rr=$(timed restic restore -q -r "$WORK/repo" latest --target "$WORK/out")
			cmp "$IMG" "$WORK/out$IMG"
		fi
		echo "$tool $b $rs $rr" | tee -a "$results"
	done
done
python3 - "$results" "$size" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
size = int(sys.argv[2])
med = {}
for tool in ("mover", "restic"):
    rs = [r for r in rows if r[0] == tool]
    b = statistics.median(float(r[1]) for r in rs)
    cpu = statistics.median(float(r[2]) + float(r[3]) for r in rs)
    rss = statistics.median(int(r[4]) for r in rs) / 1024
    repo = statistics.median(int(r[5]) for r in rs)
    rt = statistics.median(float(r[6]) for r in rs)
    med[tool] = (b, rt, repo, cpu, rss)
    print(f"{tool:7s} backup {size/b/1e6:7.0f} MB/s ({b:.2f} s, {cpu:.1f} CPU s, {rss:.0f} MiB)  restore {size/rt/1e6:7.0f} MB/s ({rt:.2f} s)  repository {repo/1e6:.0f} MB")
m, r = med["mover"], med["restic"]
print(f"mover/restic: backup {r[0]/m[0]:.2f}x  restore {r[1]/m[1]:.2f}x  repository size {m[2]/r[2]:.3f}x")
PY
