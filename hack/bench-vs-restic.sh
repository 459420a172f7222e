#!/usr/bin/env bash
# mover against restic on the same image, in the same run (issue 2, "Done
# means" item 6). For each round, in alternating order, each tool gets a warm
# page cache (`cat IMG > /dev/null`), a fresh repository, a backup/export, and
# a restore/import onto a fresh file that is compared with the image (cmp) and
# then dropped. Wall seconds, CPU seconds and peak RSS come from /usr/bin/time,
# the repository size from `du -sb`. Prints the machine, the versions, the
# exact commands, one row per run and a Markdown table of medians (min–max)
# with the ratios mover/restic.
#
#   hack/bench-vs-restic.sh                                 # 4 GiB image, 3 rounds
#   SIZE=256MiB ROUNDS=1 hack/bench-vs-restic.sh            # a quick check
#   REPO_BASE=/dev/shm hack/bench-vs-restic.sh              # repositories and restores on tmpfs
#
# Environment:
#   SIZE       image size for `mover generate` (default 4GiB)
#   ROUNDS     rounds; odd rounds run mover first, even rounds restic (default 3)
#   SEED       `mover generate --seed` (default 7, as in BENCHMARKS.md)
#   WORK       where the image and the mover binary live (default /tmp/bench-vs-restic)
#   IMG        the image (default $WORK/image-$SIZE-seed$SEED.img; generated only if missing)
#   REPO_BASE  where repositories, restic's cache and restore targets go
#              (default $WORK: the same filesystem; /dev/shm takes the disk out)
#
# Needs root only to install restic and time with apt-get when they are missing.
# shellcheck disable=SC2016,SC2005 # awk expressions and sh -c bodies are single-quoted on purpose
set -euo pipefail

die() { echo "bench-vs-restic: $*" >&2; exit 1; }
log() { echo "bench-vs-restic: $*" >&2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE=${SIZE:-4GiB}
ROUNDS=${ROUNDS:-3}
SEED=${SEED:-7}
WORK=${WORK:-/tmp/bench-vs-restic}
REPO_BASE=${REPO_BASE:-$WORK}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $SEED =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer, not '$SEED'"
mkdir -p "$WORK" "$REPO_BASE"
WORK=$(cd "$WORK" && pwd)
REPO_BASE=$(cd "$REPO_BASE" && pwd)
IMG=${IMG:-$WORK/image-$SIZE-seed$SEED.img}
IMG=$(realpath -m "$IMG")

# --- tools --------------------------------------------------------------------
apt_updated=
apt_install() { # apt_install PACKAGE: install with apt-get, running apt-get update first if needed
	[ "$(id -u)" = 0 ] || die "$1 is missing and installing it needs root (apt-get install $1)"
	command -v apt-get >/dev/null || die "$1 is missing and there is no apt-get to install it"
	log "installing $1 with apt-get"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null 2>&1; then
		[ -z "$apt_updated" ] || die "apt-get install $1 failed"
		apt-get update -qq >/dev/null || die "apt-get update failed"
		apt_updated=1
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null || die "apt-get install $1 failed"
	fi
}
command -v restic >/dev/null || apt_install restic
[ -x /usr/bin/time ] || apt_install time
for c in go cmp du df awk sort sync realpath; do
	command -v "$c" >/dev/null || die "$c is required"
done

MOVER=$WORK/mover # our own copy: others rebuilding bin/mover cannot change it mid-run
log "building mover into $MOVER"
(cd "$ROOT" && go build -o "$MOVER" ./cmd/mover) || die "go build ./cmd/mover failed"
GIT_REV=$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)

RESTIC_VERSION=$(restic version)
# --sparse on restore appeared after 0.14; use it when this restic has it.
RESTIC_SPARSE=()
if restic restore --help 2>/dev/null | grep -q -- '--sparse'; then
	RESTIC_SPARSE=(--sparse)
fi

# --- image --------------------------------------------------------------------
GEN_CMD=("$MOVER" generate -q --size "$SIZE" --seed "$SEED" --zero 0.4 --file 0.3 --duplicate 0.1)
if [ -f "$IMG" ]; then
	log "reusing $IMG"
else
	log "generating $IMG ($SIZE)"
	mkdir -p "$(dirname "$IMG")"
	rm -f "$IMG.partial"
	"${GEN_CMD[@]}" "$IMG.partial" || { rm -f "$IMG.partial"; die "mover generate failed"; }
	mv "$IMG.partial" "$IMG"
fi
size=$(stat -c %s "$IMG")
[ "$size" -gt 0 ] || die "$IMG is empty"
img_alloc=$(( $(stat -c '%b * %B' "$IMG") ))

# A non-sparse restore (restic 0.14) needs the whole size, a repository at most
# about the allocated size; one run's files exist at a time.
need=$(( size + img_alloc + 64 * 1024 * 1024 ))
avail=$(df -B1 --output=avail "$REPO_BASE" | tail -1 | tr -d ' ')
[ "$avail" -ge "$need" ] || die "$REPO_BASE has $((avail >> 20)) MiB free, a run needs about $((need >> 20)) MiB"

# --- runs ---------------------------------------------------------------------
RUN=$(mktemp -d "$REPO_BASE/bench-vs-restic.run.XXXXXX")
cleanup() { rm -rf "$RUN"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export MOVER_PASSWORD=bench-vs-restic RESTIC_PASSWORD=bench-vs-restic
unset MOVER_REPOSITORY RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND RESTIC_CACHE_DIR RESTIC_PACK_SIZE RESTIC_COMPRESSION
REPO=$RUN/repo
CACHE=$RUN/restic-cache # restic's local metadata cache, fresh per run like the repository
OUT=$RUN/restore
M_OUT=$OUT/img
R_OUT=$OUT$IMG # restic restores the absolute path under the target directory

# The commands, as run (timed parts between /usr/bin/time and the end of the line).
M_INIT=("$MOVER" init -q --repo "$REPO")
M_EXPORT=("$MOVER" export --repo "$REPO" --source "$IMG" --name v --json --keep-cache -q)
M_IMPORT=("$MOVER" import --repo "$REPO" --snapshot latest:v --target "$M_OUT" --json -q)
M_OPEN=("$MOVER" snapshots -q --repo "$REPO")
R_INIT=(restic -q -r "$REPO" --cache-dir "$CACHE" init)
R_BACKUP=(restic -q -r "$REPO" --cache-dir "$CACHE" backup "$IMG")
R_OPEN=(restic -q -r "$REPO" --cache-dir "$CACHE" snapshots)
# restic 0.14 does not fsync restored files; mover fdatasyncs its target before
# reporting success, so restic's restore is timed with a `sync -d` of the file.
R_RESTORE=(sh -c 'restic -q -r "$1" --cache-dir "$2" restore latest --target "$3" '"${RESTIC_SPARSE[*]}"' && sync -d "$4"' sh "$REPO" "$CACHE" "$OUT" "$R_OUT")

timed() { # timed NAME CMD...: run CMD under /usr/bin/time; stdout to $RUN/NAME.out; prints "wall user sys maxrss_kb"
	local name=$1
	shift
	if ! /usr/bin/time -f '%e %U %S %M' -o "$RUN/$name.time" "$@" >"$RUN/$name.out" 2>"$RUN/$name.err"; then
		echo "bench-vs-restic: failed: $*" >&2
		cat "$RUN/$name.err" >&2
		exit 1
	fi
	tail -1 "$RUN/$name.time"
}

state() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg), $(awk '/MemAvailable/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) available"; }
state_before=$(state)
results=$RUN/results
: >"$results"
restic_repo_version=
run_one() { # run_one ROUND POSITION TOOL
	local round=$1 pos=$2 tool=$3 b rs r o
	rm -rf "$REPO" "$CACHE" "$OUT"
	mkdir -p "$OUT"
	log "round $round/$ROUNDS: $tool (${pos})"
	cat "$IMG" >/dev/null # warm cache
	if [ "$tool" = mover ]; then
		"${M_INIT[@]}" >/dev/null || die "mover init failed"
		b=$(timed backup "${M_EXPORT[@]}")
		rs=$(du -sb "$REPO" | cut -f1)
		o=$(timed open "${M_OPEN[@]}")
		r=$(timed restore "${M_IMPORT[@]}")
		cmp "$IMG" "$M_OUT" || die "mover's import differs from $IMG"
	else
		"${R_INIT[@]}" >/dev/null || die "restic init failed"
		restic_repo_version=$(restic -q -r "$REPO" --cache-dir "$CACHE" --no-lock cat config | awk -F'[:,]' '/"version"/ {gsub(/ /, "", $2); print $2}')
		b=$(timed backup "${R_BACKUP[@]}")
		rs=$(du -sb "$REPO" | cut -f1)
		o=$(timed open "${R_OPEN[@]}")
		r=$(timed restore "${R_RESTORE[@]}")
		[ -f "$R_OUT" ] || die "restic restore wrote no $R_OUT"
		cmp "$IMG" "$R_OUT" || die "restic's restore differs from $IMG"
	fi
	local restored=$M_OUT alloc
	[ "$tool" = mover ] || restored=$R_OUT
	alloc=$(( $(stat -c '%b * %B' "$restored") ))
	# round tool position | backup wall user sys rss_kb | repo_bytes | restore wall user sys rss_kb | restored_alloc_bytes | open wall
	echo "$round $tool $pos $b $rs $r $alloc ${o%% *}" >>"$results"
	rm -rf "$REPO" "$CACHE" "$OUT"
}

for round in $(seq 1 "$ROUNDS"); do
	if (( round % 2 )); then first=mover second=restic; else first=restic second=mover; fi
	run_one "$round" first "$first"
	run_one "$round" second "$second"
done

state_after=$(state)

# --- report -------------------------------------------------------------------
fs_of() { df --output=fstype "$1" | tail -1; }
q() { local s="" a; for a in "$@"; do s+="$(printf '%q ' "$a")"; done; echo "${s% }"; }
echo "## mover vs restic: $(numfmt --to=iec-i --suffix=B "$size" 2>/dev/null || echo "$size bytes") image, $ROUNDS round(s)"
echo
echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "- before: $state_before; after: $state_after"
echo "- mover: $GIT_REV ($(go version | cut -d' ' -f3)); $RESTIC_VERSION, repository version ${restic_repo_version:-?}, default chunker, compression auto (mover: zstd fastest)"
echo "- image: $IMG, $size bytes, $img_alloc allocated (holes are the rest), on $(fs_of "$IMG"); repositories, restic cache and restores under $REPO_BASE ($(fs_of "$REPO_BASE"))"
echo "- warm cache for both: \`cat IMG > /dev/null\` before each backup; fresh repository and restore target per run; order alternates per round"
if [ ${#RESTIC_SPARSE[@]} -gt 0 ]; then
	echo "- restic restore uses --sparse (writes holes like mover)"
else
	echo "- restic $(restic version | cut -d' ' -f2) has no \`restore --sparse\`: it writes the zeros that mover leaves as holes"
fi
echo "- MB/s = image size (10^6 bytes) / wall seconds; CPU = user + sys; RSS = peak (/usr/bin/time %M); repository = du -sb after the backup"
echo
echo "Commands (password via MOVER_PASSWORD / RESTIC_PASSWORD):"
echo
echo '```'
echo "$(q "${GEN_CMD[@]}") IMG   # once"
echo "$(q "${M_INIT[@]}")"
echo "$(q "${M_EXPORT[@]}")"
echo "$(q "${M_OPEN[@]}")   # open repository s"
echo "$(q "${M_IMPORT[@]}")"
echo "$(q "${R_INIT[@]}")"
echo "$(q "${R_BACKUP[@]}")"
echo "$(q "${R_OPEN[@]}")   # open repository s"
echo "restic -q -r $REPO --cache-dir $CACHE restore latest --target $OUT ${RESTIC_SPARSE[*]} && sync -d $R_OUT"
echo "cmp IMG RESTORED"
echo '```'
echo
echo "| round | tool | order | backup s | backup CPU s | backup RSS MiB | repository MiB | restore s | restore CPU s | restore RSS MiB | restored file allocated MiB | open s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
awk '{printf "| %s | %s | %s | %.2f | %.1f | %.0f | %.1f | %.2f | %.1f | %.0f | %.0f | %.2f |\n", $1, $2, $3, $4, $5+$6, $7/1024, $8/1048576, $9, $10+$11, $12/1024, $13/1048576, $14}' "$results"
echo
# metric NAME EXPR: per tool "median min max" of an awk expression over the result columns
metric() {
	local tool=$1 expr=$2
	awk -v t="$tool" -v s="$size" "\$2 == t {print $expr}" "$results" | sort -g |
		awk '{v[NR] = $1} END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR]}'
}
row() { # row LABEL EXPR FORMAT RATIO?
	local label=$1 expr=$2 fmt=$3 ratio=$4 m r
	m=$(metric mover "$expr")
	r=$(metric restic "$expr")
	awk -v l="$label" -v f="$fmt" -v ratio="$ratio" -v m="$m" -v r="$r" 'BEGIN {
		split(m, a, " "); split(r, b, " ")
		line = sprintf("| %s | " f " (" f "–" f ") | " f " (" f "–" f ") |", l, a[1], a[2], a[3], b[1], b[2], b[3])
		if (ratio != "" && b[1] > 0) line = line sprintf(" **%.2f×** |", a[1] / b[1]); else if (b[1] > 0) line = line sprintf(" %.2f× |", a[1] / b[1]); else line = line " |"
		print line
	}'
}
echo "| median (min–max) | mover | restic | mover/restic |"
echo "| --- | --- | --- | --- |"
row "backup MB/s" 's / $4 / 1e6' "%.0f" 1
row "restore MB/s" 's / $9 / 1e6' "%.0f" 1
row "repository MiB" '$8 / 1048576' "%.1f" 1
row "backup CPU s" '$5 + $6' "%.1f" ""
row "restore CPU s" '$10 + $11' "%.1f" ""
row "backup peak RSS MiB" '$7 / 1024' "%.0f" ""
row "restore peak RSS MiB" '$12 / 1024' "%.0f" ""
row "backup wall s" '$4' "%.2f" ""
row "restore wall s" '$9' "%.2f" ""
row "open repository s" '$14' "%.2f" ""
echo
echo "\"open repository s\" is the wall time of \`snapshots\` on the filled repository (key derivation, lock, index): a fixed cost inside every backup and restore above, which weighs on small images."
echo "Ratios in bold are the ones issue 2 judges: backup throughput ≥ 2.5×, restore throughput ≥ 2×, repository size ≤ 1.05×."
