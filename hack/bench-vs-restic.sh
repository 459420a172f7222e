#!/usr/bin/env bash
# mover against restic 0.19.1 and kopia 0.22.3 (as users run them today,
# built by hack/install-peers.sh) on the same image, in the same run (issue
# 15). For each round, in rotating order, each tool gets a warm page cache
# (`cat IMG > /dev/null`), a fresh repository, a backup/export, and a
# restore/import onto a fresh file (restic --sparse, kopia
# --write-sparse-files: holes like mover's), timed as the tool returns and
# then followed by `sync` (durable), compared with the image (cmp) and
# dropped. Wall seconds, CPU seconds and peak RSS come from /usr/bin/time,
# the repository size from `du -sb`. Prints the machine, the versions, the
# exact commands, one row per run and a Markdown table of medians (min–max)
# with the ratios mover/peer. Before the first round and after the last it
# measures the physical floor of a restore under REPO_BASE
# (hack/writefloor: the image's data written onto a new file there with
# O_DIRECT and fdatasynced, nothing decoded), the least any durable
# restore there can take.
#
#   hack/bench-vs-restic.sh                                 # 4 GiB image, 3 rounds
#   SIZE=256MiB ROUNDS=1 hack/bench-vs-restic.sh            # a quick check
#   REPO_BASE=/dev/shm hack/bench-vs-restic.sh              # repositories and restores on tmpfs
#   REPO_BASE=/var/tmp/bvr ALSO_RESTORE=/dev/shm hack/bench-vs-restic.sh
#                                  # restores onto the disk, then onto tmpfs, in the same run
#
# Environment:
#   SIZE       image size for `mover generate` (default 4GiB)
#   ROUNDS     rounds; the order of the tools rotates each round (default 3)
#   PEERS      peers to run beside mover (default "restic kopia")
#   SEED       `mover generate --seed` (default 7, as in BENCHMARKS.md)
#   WORK       where the image and the mover binary live (default /tmp/bench-vs-restic)
#   IMG        the image (default $WORK/image-$SIZE-seed$SEED.img; generated only if missing)
#   REPO_BASE  where repositories, restic's cache and restore targets go
#              (default $WORK: the same filesystem; /dev/shm takes the disk out)
#   REPO_CACHE the repository's pages before each restore: cold (default:
#              synced, then dropped from the page cache file by file, as a
#              restore days after the backup finds them), warm (synced,
#              then every file read), or asleft (as the backup left them: a tool that
#              writes around the page cache, as mover does since session
#              14, then restores cold and the others warm). On tmpfs the
#              pages are the storage: all three are the same.
#   ALSO_RESTORE a second directory (e.g. /dev/shm): after the restore under
#              REPO_BASE (timed, synced, compared, removed), each run
#              restores once more onto a fresh file there, from the same
#              repository (REPO_CACHE applied again), timed and reported the
#              same way: both targets in one interleaved run
#
# Builds the peers with hack/install-peers.sh (Go module proxy) when missing;
# falls back to a restic on PATH (Debian's 0.14 has no --sparse), and says so.
# Needs root only to install time with apt-get when it is missing.
# shellcheck disable=SC2016,SC2005 # awk expressions and sh -c bodies are single-quoted on purpose
set -euo pipefail

die() { echo "bench-vs-restic: $*" >&2; exit 1; }
log() { echo "bench-vs-restic: $*" >&2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE=${SIZE:-4GiB}
ROUNDS=${ROUNDS:-3}
PEERS=${PEERS:-restic kopia}
SEED=${SEED:-7}
WORK=${WORK:-/tmp/bench-vs-restic}
REPO_BASE=${REPO_BASE:-$WORK}
REPO_CACHE=${REPO_CACHE:-cold}
ALSO_RESTORE=${ALSO_RESTORE:-}
case $REPO_CACHE in cold | warm | asleft) ;; *) die "REPO_CACHE must be cold, warm or asleft, not '$REPO_CACHE'" ;; esac
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $SEED =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer, not '$SEED'"
mkdir -p "$WORK" "$REPO_BASE" ${ALSO_RESTORE:+"$ALSO_RESTORE"}
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
[ -x /usr/bin/time ] || apt_install time
for c in go cmp du df awk sort sync realpath; do
	command -v "$c" >/dev/null || die "$c is required"
done

MOVER=$WORK/mover # our own copy: others rebuilding bin/mover cannot change it mid-run
log "building mover into $MOVER"
(cd "$ROOT" && go build -o "$MOVER" ./cmd/mover) || die "go build ./cmd/mover failed"
GIT_REV=$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)
FLOOR=$WORK/writefloor
(cd "$ROOT" && go build -o "$FLOOR" ./hack/writefloor) || die "go build ./hack/writefloor failed"

RESTIC= KOPIA= PEER_NOTE=
for p in $PEERS; do
	case $p in
	restic | kopia) ;;
	*) die "unknown peer $p (restic, kopia)" ;;
	esac
	bin=$("$ROOT/hack/install-peers.sh" "$p" | awk '{print $2}') || bin=
	if [ "$p" = restic ]; then
		if [ -z "$bin" ]; then
			bin=$(command -v restic) || die "restic could not be built and none is on PATH"
			PEER_NOTE+="restic v0.19.1 could not be built: $bin ($("$bin" version | cut -d' ' -f2)) instead. "
		fi
		RESTIC=$bin
	else
		[ -n "$bin" ] || die "kopia could not be built (hack/install-peers.sh kopia)"
		KOPIA=$bin
	fi
done
TOOLS=(mover)
[ -z "$RESTIC" ] || TOOLS+=(restic)
[ -z "$KOPIA" ] || TOOLS+=(kopia)
RESTIC_VERSION=${RESTIC:+$("$RESTIC" version)}
KOPIA_VERSION=${KOPIA:+$("$KOPIA" --version 2>&1 | head -1)}
# --sparse on restore appeared after 0.14; use it when this restic has it.
RESTIC_SPARSE=()
if [ -n "$RESTIC" ] && "$RESTIC" restore --help 2>/dev/null | grep -q -- '--sparse'; then
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
ALSO_OUT=
if [ -n "$ALSO_RESTORE" ]; then
	ALSO_OUT=$(mktemp -d "$ALSO_RESTORE/bench-vs-restic.restore.XXXXXX")
	avail=$(df -B1 --output=avail "$ALSO_RESTORE" | tail -1 | tr -d ' ')
	[ "$avail" -ge $((size + 64 * 1024 * 1024)) ] || die "$ALSO_RESTORE has $((avail >> 20)) MiB free, a restore needs about $((size >> 20)) MiB"
fi
cleanup() { rm -rf "$RUN" ${ALSO_OUT:+"$ALSO_OUT"}; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export MOVER_PASSWORD=bench-vs-restic RESTIC_PASSWORD=bench-vs-restic KOPIA_PASSWORD=bench-vs-restic KOPIA_CHECK_FOR_UPDATES=false
unset MOVER_REPOSITORY RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND RESTIC_CACHE_DIR RESTIC_PACK_SIZE RESTIC_COMPRESSION
REPO=$RUN/repo
CACHE=$RUN/cache # restic's and kopia's local caches, fresh per run like the repository
OUT=$RUN/restore
M_OUT=$OUT/img
R_OUT=$OUT$IMG # restic restores the absolute path under the target directory
K_OUT=$OUT/img
KCONF=$RUN/kopia.config

# The commands, as run (timed parts between /usr/bin/time and the end of the line).
M_INIT=("$MOVER" init -q --repo "$REPO")
M_EXPORT=("$MOVER" export --repo "$REPO" --source "$IMG" --name v --json --keep-cache -q)
M_IMPORT=("$MOVER" import --repo "$REPO" --snapshot latest:v --target "$M_OUT" --json -q)
M_OPEN=("$MOVER" snapshots -q --repo "$REPO")
R_INIT=("$RESTIC" -q -r "$REPO" --cache-dir "$CACHE" init)
R_BACKUP=("$RESTIC" -q -r "$REPO" --cache-dir "$CACHE" backup "$IMG")
R_OPEN=("$RESTIC" -q -r "$REPO" --cache-dir "$CACHE" snapshots)
R_RESTORE=("$RESTIC" -q -r "$REPO" --cache-dir "$CACHE" restore latest --target "$OUT" "${RESTIC_SPARSE[@]}")
K_INIT=("$KOPIA" --config-file "$KCONF" repository create filesystem --path "$REPO" --cache-directory "$CACHE")
K_POLICY=("$KOPIA" --config-file "$KCONF" policy set --global --compression zstd-fastest)
K_BACKUP=("$KOPIA" --config-file "$KCONF" snapshot create "$IMG")
K_OPEN=("$KOPIA" --config-file "$KCONF" snapshot list "$IMG")
K_RESTORE=("$KOPIA" --config-file "$KCONF" snapshot restore --write-sparse-files "$IMG" "$K_OUT")
SYNC=(sync)
# The same restores onto ALSO_RESTORE.
M_IMPORT2=("$MOVER" import --repo "$REPO" --snapshot latest:v --target "$ALSO_OUT/img" --json -q)
R_RESTORE2=("$RESTIC" -q -r "$REPO" --cache-dir "$CACHE" restore latest --target "$ALSO_OUT" "${RESTIC_SPARSE[@]}")
K_RESTORE2=("$KOPIA" --config-file "$KCONF" snapshot restore --write-sparse-files "$IMG" "$ALSO_OUT/img")

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
# floor: the physical floor of a durable restore under REPO_BASE (direct
# writes; buffered where the filesystem refuses O_DIRECT, e.g. tmpfs).
floor() {
	sync
	"$FLOOR" -image "$IMG" -out "$RUN/floor.tmp" -mode direct 2>/dev/null ||
		"$FLOOR" -image "$IMG" -out "$RUN/floor.tmp" -mode buffered
}
floor_before=$(floor) || die "hack/writefloor failed"
state_before=$(state)
results=$RUN/results
: >"$results"
restic_repo_version=
# repo_cache: the repository's pages before a restore (REPO_CACHE).
repo_cache() {
	case $REPO_CACHE in
	cold)
		sync
		find "$REPO" -type f -exec dd if={} iflag=nocache count=0 status=none \;
		;;
	warm)
		sync
		find "$REPO" -type f -exec cat {} + >/dev/null
		;;
	esac
}
# restore_also TOOL: the second restore, onto ALSO_RESTORE; prints
# "wall user sys rss_kb sync_wall".
restore_also() {
	local tool=$1 r s restored
	rm -rf "${ALSO_OUT:?}"/*
	repo_cache
	case $tool in
	mover) r=$(timed restore2 "${M_IMPORT2[@]}") restored=$ALSO_OUT/img ;;
	restic) r=$(timed restore2 "${R_RESTORE2[@]}") restored=$ALSO_OUT$IMG ;;
	kopia) r=$(timed restore2 "${K_RESTORE2[@]}") restored=$ALSO_OUT/img ;;
	esac
	s=$(timed sync2 "${SYNC[@]}")
	[ -f "$restored" ] || die "$tool wrote no $restored"
	cmp "$IMG" "$restored" || die "$tool's restore onto $ALSO_RESTORE differs from $IMG"
	rm -rf "${ALSO_OUT:?}"/*
	echo "$r ${s%% *}"
}
run_one() { # run_one ROUND POSITION TOOL
	local round=$1 pos=$2 tool=$3 b rs r o s restored also=
	rm -rf "$REPO" "$CACHE" "$OUT" "$KCONF"
	mkdir -p "$OUT"
	log "round $round/$ROUNDS: $tool (${pos})"
	cat "$IMG" >/dev/null # warm cache
	sync                  # nothing of the last run left to write back
	case $tool in
	mover)
		"${M_INIT[@]}" >/dev/null || die "mover init failed"
		b=$(timed backup "${M_EXPORT[@]}")
		rs=$(du -sb "$REPO" | cut -f1)
		o=$(timed open "${M_OPEN[@]}")
		repo_cache
		r=$(timed restore "${M_IMPORT[@]}")
		restored=$M_OUT
		;;
	restic)
		"${R_INIT[@]}" >/dev/null || die "restic init failed"
		restic_repo_version=$("$RESTIC" -q -r "$REPO" --cache-dir "$CACHE" --no-lock cat config | awk -F'[:,]' '/"version"/ {gsub(/ /, "", $2); print $2}')
		b=$(timed backup "${R_BACKUP[@]}")
		rs=$(du -sb "$REPO" | cut -f1)
		o=$(timed open "${R_OPEN[@]}")
		repo_cache
		r=$(timed restore "${R_RESTORE[@]}")
		restored=$R_OUT
		;;
	kopia)
		mkdir -p "$REPO"
		"${K_INIT[@]}" >/dev/null 2>&1 || die "kopia repository create failed"
		"${K_POLICY[@]}" >/dev/null 2>&1 || die "kopia policy set failed"
		b=$(timed backup "${K_BACKUP[@]}")
		rs=$(du -sb "$REPO" | cut -f1)
		o=$(timed open "${K_OPEN[@]}")
		repo_cache
		r=$(timed restore "${K_RESTORE[@]}")
		restored=$K_OUT
		;;
	esac
	# Durable: the restore as returned, then sync (mover's import has
	# fdatasynced its target already; the peers' restores do not flush).
	s=$(timed sync "${SYNC[@]}")
	[ -f "$restored" ] || die "$tool wrote no $restored"
	cmp "$IMG" "$restored" || die "$tool's restore differs from $IMG"
	local alloc=$(( $(stat -c '%b * %B' "$restored") ))
	if [ -n "$ALSO_RESTORE" ]; then
		rm -rf "$OUT"
		also=$(restore_also "$tool")
	fi
	# round tool position | backup wall user sys rss_kb | repo_bytes | restore wall user sys rss_kb | restored_alloc_bytes | open wall | sync wall [| restore2 wall user sys rss_kb | sync2 wall]
	echo "$round $tool $pos $b $rs $r $alloc ${o%% *} ${s%% *} $also" >>"$results"
	rm -rf "$REPO" "$CACHE" "$OUT" "$KCONF"
}

n=${#TOOLS[@]}
for round in $(seq 1 "$ROUNDS"); do
	for i in $(seq 0 $((n - 1))); do
		tool=${TOOLS[$(( (i + round - 1) % n ))]}
		run_one "$round" "$((i + 1))" "$tool"
	done
done

state_after=$(state)
floor_after=$(floor) || die "hack/writefloor failed"

# --- report -------------------------------------------------------------------
fs_of() { df --output=fstype "$1" | tail -1; }
q() { local s="" a; for a in "$@"; do s+="$(printf '%q ' "$a")"; done; echo "${s% }"; }
echo "## mover vs ${TOOLS[*]:1}: $(numfmt --to=iec-i --suffix=B "$size" 2>/dev/null || echo "$size bytes") image, $ROUNDS round(s)"
echo
echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "- before: $state_before; after: $state_after; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- mover: $GIT_REV ($(go version | cut -d' ' -f3)), zstd fastest${RESTIC:+; $RESTIC_VERSION, repository version ${restic_repo_version:-?}, compression auto}${KOPIA:+; kopia $KOPIA_VERSION, zstd-fastest}"
[ -z "$PEER_NOTE" ] || echo "- $PEER_NOTE"
echo "- image: $IMG, $size bytes, $img_alloc allocated (holes are the rest), on $(fs_of "$IMG"); repositories, caches and restores under $REPO_BASE ($(fs_of "$REPO_BASE"))"
echo "- physical floor under $REPO_BASE (hack/writefloor: the image's data extents written onto a new file, nothing decoded, + fdatasync), before the rounds: $floor_before; after: $floor_after"
echo "- warm cache for all: \`cat IMG > /dev/null; sync\` before each backup; fresh repository and restore target per run; the order rotates per round"
[ -z "$ALSO_RESTORE" ] || echo "- each run restores twice: onto a new file under $REPO_BASE ($(fs_of "$REPO_BASE")), then, that one compared and removed, onto a new file under $ALSO_RESTORE ($(fs_of "$ALSO_RESTORE")); both timed with their \`sync\`, compared with the image and removed"
echo "- the repository before each restore: $REPO_CACHE (REPO_CACHE: cold = synced and dropped from the page cache file by file, warm = synced and every file read, asleft = as the backup left it)"
if [ -n "$RESTIC" ] && [ ${#RESTIC_SPARSE[@]} -eq 0 ]; then
	echo "- restic $("$RESTIC" version | cut -d' ' -f2) has no \`restore --sparse\`: it writes the zeros that mover leaves as holes"
fi
echo "- MB/s = image size (10^6 bytes) / wall seconds; restore = as the tool returns (mover's import fdatasyncs its target before it returns), durable = restore + \`sync\`; CPU = user + sys; RSS = peak (/usr/bin/time %M); repository = du -sb after the backup"
echo
echo "Commands (password via MOVER_PASSWORD / RESTIC_PASSWORD / KOPIA_PASSWORD):"
echo
echo '```'
echo "$(q "${GEN_CMD[@]}") IMG   # once"
echo "$(q "${M_INIT[@]}")"
echo "$(q "${M_EXPORT[@]}")"
echo "$(q "${M_OPEN[@]}")   # open repository s"
echo "$(q "${M_IMPORT[@]}") && sync"
[ -z "$ALSO_RESTORE" ] || echo "$(q "${M_IMPORT2[@]}") && sync"
if [ -n "$RESTIC" ]; then
	echo "$(q "${R_INIT[@]}")"
	echo "$(q "${R_BACKUP[@]}")"
	echo "$(q "${R_OPEN[@]}")   # open repository s"
	echo "$(q "${R_RESTORE[@]}") && sync"
	[ -z "$ALSO_RESTORE" ] || echo "$(q "${R_RESTORE2[@]}") && sync"
fi
if [ -n "$KOPIA" ]; then
	echo "$(q "${K_INIT[@]}")"
	echo "$(q "${K_POLICY[@]}")"
	echo "$(q "${K_BACKUP[@]}")"
	echo "$(q "${K_OPEN[@]}")   # open repository s"
	echo "$(q "${K_RESTORE[@]}") && sync"
	[ -z "$ALSO_RESTORE" ] || echo "$(q "${K_RESTORE2[@]}") && sync"
fi
echo "cmp IMG RESTORED"
echo '```'
echo
if [ -z "$ALSO_RESTORE" ]; then
	echo "| round | tool | order | backup s | backup CPU s | backup RSS MiB | repository MiB | restore s | durable s | restore CPU s | restore RSS MiB | restored file allocated MiB | open s |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	awk '{printf "| %s | %s | %s | %.2f | %.1f | %.0f | %.1f | %.2f | %.2f | %.1f | %.0f | %.0f | %.2f |\n", $1, $2, $3, $4, $5+$6, $7/1024, $8/1048576, $9, $9+$15, $10+$11, $12/1024, $13/1048576, $14}' "$results"
else
	echo "| round | tool | order | backup s | backup CPU s | backup RSS MiB | repository MiB | restore s | durable s | restore CPU s | restore RSS MiB | restored file allocated MiB | open s | restore onto $ALSO_RESTORE s | durable s | CPU s | RSS MiB |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	awk '{printf "| %s | %s | %s | %.2f | %.1f | %.0f | %.1f | %.2f | %.2f | %.1f | %.0f | %.0f | %.2f | %.2f | %.2f | %.1f | %.0f |\n", $1, $2, $3, $4, $5+$6, $7/1024, $8/1048576, $9, $9+$15, $10+$11, $12/1024, $13/1048576, $14, $16, $16+$20, $17+$18, $19/1024}' "$results"
fi
echo
# metric TOOL EXPR: "median min max" of an awk expression over the result columns
metric() {
	local tool=$1 expr=$2
	awk -v t="$tool" -v s="$size" "\$2 == t {print $expr}" "$results" | sort -g |
		awk '{v[NR] = $1} END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR]}'
}
header="| median (min–max) |"
rule="| --- |"
for t in "${TOOLS[@]}"; do header+=" $t |"; rule+=" --- |"; done
for t in "${TOOLS[@]:1}"; do header+=" mover/$t |"; rule+=" --- |"; done
row() { # row LABEL EXPR FORMAT BOLD
	local label=$1 expr=$2 fmt=$3 bold=$4 t line m
	line="| $label |"
	local -A med
	for t in "${TOOLS[@]}"; do
		m=$(metric "$t" "$expr")
		med[$t]=${m%% *}
		line+=$(awk -v f="$fmt" -v m="$m" 'BEGIN {split(m, a, " "); printf " " f " (" f "–" f ") |", a[1], a[2], a[3]}')
	done
	for t in "${TOOLS[@]:1}"; do
		line+=$(awk -v a="${med[mover]}" -v b="${med[$t]}" -v bold="$bold" 'BEGIN {if (b > 0) printf(bold ? " **%.2f×** |" : " %.2f× |", a / b); else printf " |"}')
	done
	echo "$line"
}
echo "$header"
echo "$rule"
row "backup MB/s" 's / $4 / 1e6' "%.0f" 1
row "restore MB/s (as returned)" 's / $9 / 1e6' "%.0f" 1
row "restore MB/s (durable: + sync)" 's / ($9 + $15) / 1e6' "%.0f" 1
if [ -n "$ALSO_RESTORE" ]; then
	row "restore onto $ALSO_RESTORE MB/s (as returned)" 's / $16 / 1e6' "%.0f" 1
	row "restore onto $ALSO_RESTORE MB/s (durable: + sync)" 's / ($16 + $20) / 1e6' "%.0f" 1
fi
row "repository MiB" '$8 / 1048576' "%.1f" 1
row "backup CPU s" '$5 + $6' "%.1f" ""
row "restore CPU s" '$10 + $11' "%.1f" ""
row "backup peak RSS MiB" '$7 / 1024' "%.0f" ""
row "restore peak RSS MiB" '$12 / 1024' "%.0f" ""
[ -z "$ALSO_RESTORE" ] || row "restore onto $ALSO_RESTORE peak RSS MiB" '$19 / 1024' "%.0f" ""
row "backup wall s" '$4' "%.2f" ""
row "restore wall s" '$9' "%.2f" ""
row "sync after restore s" '$15' "%.2f" ""
if [ -n "$ALSO_RESTORE" ]; then
	row "restore onto $ALSO_RESTORE wall s" '$16' "%.2f" ""
	row "restore onto $ALSO_RESTORE CPU s" '$17 + $18' "%.1f" ""
fi
row "open repository s" '$14' "%.2f" ""
echo
echo "\"open repository s\" is the wall time of listing snapshots on the filled repository (key derivation, lock, index): a fixed cost inside every backup and restore above, which weighs on small images."
if [ -n "$RESTIC" ]; then
	fsec() { sed -n 's/.*+fdatasync \([0-9.]*\) s.*/\1/p' <<<"$1"; }
	rd=$(metric restic '$9 + $15') rd=${rd%% *}
	md=$(metric mover '$9 + $15') md=${md%% *}
	awk -v r="$rd" -v m="$md" -v f1="$(fsec "$floor_before")" -v f2="$(fsec "$floor_after")" 'BEGIN {
		f = (f1 + f2) / 2
		printf "Durable restore: 2.5× restic is %.2f s, the physical floor %.2f s (%s–%s), mover %.2f s (%.2f× the floor).\n", r / 2.5, f, f1, f2, m, (f > 0 ? m / f : 0) }'
	echo
fi
echo "Issue 15 judges: backup throughput ≥ 3× restic's, restore ≥ 2× restic's onto tmpfs and ≥ 2.5× durable onto the disk, repository ≤ 1.05× restic's."
