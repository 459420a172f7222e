#!/usr/bin/env bash
# Incremental exports with changed-block tracking, against full exports and
# restic's re-backup, in one run on one image (issue 4's benchmark).
#
#   hack/bench-cbt.sh                     # 8 GiB image
#   SIZE=1GiB hack/bench-cbt.sh
#
# Pattern (a): 1% of the volume changed in 64 clustered runs of ~1.3 MiB
# (database-like). Pattern (b): 1,000 scattered 4 KiB writes. For each:
# mover incremental export with the change list, mover re-export without it
# (reads everything, stores only new chunks), restic re-backup (with the
# previous snapshot as parent), then mover incremental import onto a replica
# holding the base against a full import. Repositories and replicas on tmpfs.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-8GiB}
WORK=${WORK:-/dev/shm/bench-cbt}
IMG=${IMG:-/tmp/bench-cbt-$SIZE.img}
command -v restic >/dev/null || { apt-get update -qq && apt-get install -y -qq restic; }
go build -o bin/mover ./cmd/mover
M=$PWD/bin/mover
export MOVER_PASSWORD=bench RESTIC_PASSWORD=bench
rm -rf "$WORK" && mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
rm -f "$IMG"
$M generate -q --size "$SIZE" --seed 11 --zero 0.3 --file 0.4 --duplicate 0.1 "$IMG"
size=$(stat -c %s "$IMG")
echo "# $(nproc) cores, $(uname -r), $(restic version | cut -d' ' -f1-2); image $IMG, $size bytes"

secs() { /usr/bin/time -f %e -o "$WORK/t" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }; cat "$WORK/t"; }
field() { python3 -c "import json,sys; print(json.load(open('$WORK/out'))['$1'])"; }

# change FILE PATTERN: write the pattern into the image, print a change list.
change() {
	python3 - "$IMG" "$1" "$2" <<'PY'
import json, os, random, sys
img, out, pattern = sys.argv[1], sys.argv[2], sys.argv[3]
size = os.path.getsize(img)
rng = random.Random(pattern)
blocks = []
with open(img, "r+b") as f:
    if pattern == "clustered":
        runs, run = 64, size // 100 // 64
        for i in range(runs):
            off = rng.randrange(0, size - run) // 4096 * 4096
            f.seek(off); f.write(os.urandom(run)); blocks.append((off, run))
    else:
        for i in range(1000):
            off = rng.randrange(0, size // 4096) * 4096
            f.seek(off); f.write(os.urandom(4096)); blocks.append((off, 4096))
json.dump({"block_metadata_type": "VARIABLE_LENGTH", "volume_capacity_bytes": size,
           "block_metadata": [{"byte_offset": o, "size_bytes": s} for o, s in blocks]}, open(out, "w"))
print(sum(s for _, s in blocks))
PY
}

cat "$IMG" >/dev/null
$M init -q --repo "$WORK/m" >/dev/null
restic init -q -r "$WORK/r" >/dev/null
full=$(secs $M export -q --json --keep-cache --repo "$WORK/m" --source "$IMG" --name v)
echo "full export: ${full}s, stored $(field stored_bytes)"
rfull=$(secs restic backup -q -r "$WORK/r" "$IMG")
echo "restic first backup: ${rfull}s"
fimp=$(secs $M import -q --repo "$WORK/m" --snapshot latest --target "$WORK/replica")
echo "full import: ${fimp}s"
base=$($M snapshots --json --repo "$WORK/m" | python3 -c "import json,sys; print(json.load(sys.stdin)[-1]['id'])")

for pattern in clustered scattered; do
	changed=$(change "$WORK/changes.json" $pattern)
	cat "$IMG" >/dev/null
	inc=$(secs $M export -q --json --keep-cache --repo "$WORK/m" --source "$IMG" --name v --base "$base" --changes "$WORK/changes.json")
	inc_read=$(field read_bytes); inc_stored=$(field stored_bytes); snap=$(field snapshot)
	cat "$IMG" >/dev/null
	re=$(secs $M export -q --json --keep-cache --repo "$WORK/m" --source "$IMG" --name v --base "$base")
	re_read=$(field read_bytes); re_stored=$(field stored_bytes)
	rs0=$(du -sb "$WORK/r" | cut -f1)
	cat "$IMG" >/dev/null
	rre=$(secs restic backup -q -r "$WORK/r" "$IMG")
	rs1=$(du -sb "$WORK/r" | cut -f1)
	iimp=$(secs $M import -q --json --repo "$WORK/m" --snapshot "$snap" --target "$WORK/replica" --assume-base "$base")
	written=$(field written_bytes)
	cmp "$IMG" "$WORK/replica"
	echo "pattern $pattern: changed $changed bytes"
	echo "  mover incremental export ${inc}s, read $inc_read, stored $inc_stored ($(python3 -c "print(round($inc_stored/$changed,2))")x changed)"
	echo "  mover re-export without a change list ${re}s, read $re_read, stored $re_stored"
	echo "  restic re-backup ${rre}s, stored $((rs1 - rs0))"
	echo "  speed-up of the incremental export: $(python3 -c "print(round($full/$inc,1))")x over the full export, $(python3 -c "print(round($rre/$inc,1))")x over restic"
	echo "  mover incremental import ${iimp}s (wrote $written) vs full import ${fimp}s: $(python3 -c "print(round($fimp/$iimp,1))")x"
	base=$snap
done
rm -f "$IMG"
