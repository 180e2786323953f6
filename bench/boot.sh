#!/usr/bin/env bash
# Boot time, measured: RUNS boots of the default image through OVMF under TCG (and KVM where
# it works), each from power-on of a fresh copy of the disk to the health line, with the
# guest's own breakdown (LOISTO-BOOT: kernel, initrd, userspace) and the time before the
# kernel as vm sees it. For comparison, the mkosi image bench/compare-mkosi.sh builds (same
# packages), timed to the same point both images reach: multi-user.target.
#
#   bench/boot.sh                 # RUNS=5, tcg; the loisto image from output/, mkosi's if built
#   RUNS=9 ACCELS="tcg kvm" bench/boot.sh
#
# Needs a built image (loisto-image build) and the host tools.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
ACCELS=${ACCELS:-tcg}
BENCH_DIR=${BENCH_DIR:-/var/tmp/loisto-bench}
bin=${LOISTO_IMAGE:-target/release/loisto-image}
[ -x "$bin" ] || cargo build --release -q
mkosi_img="$BENCH_DIR/mkosi/output/loisto_0.1.0.raw"
multi_user='Reached target .*multi-user.target'

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }

# boot NAME ACCEL REGEX IMAGE...: one row per run in $rows: name accel total kernel initrd userspace before-kernel
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
boot() {
    local name=$1 accel=$2 regex=$3 out total breakdown
    shift 3
    for i in $(seq "$RUNS"); do
        out=$("$bin" vm --headless --accel "$accel" --expect "$regex" --timeout 600 "$@" 2>&1) || {
            echo "$name ($accel) run $i did not reach /$regex/:"; tail -20 <<< "$out"; exit 1; }
        total=$(sed -n 's/^matched after \([0-9.]*\)s.*/\1/p' <<< "$out")
        # vm's "boot:" line: power-on to kernel Xs ..., kernel=Ys initrd=Zs userspace=Ws ...
        breakdown=$(sed -n 's/^boot: power-on to kernel \([0-9.]*\)s.* kernel=\([0-9.-]*\)s\{0,1\} initrd=\([0-9.-]*\)s\{0,1\} userspace=\([0-9.-]*\)s\{0,1\} .*/\2 \3 \4 \1/p' <<< "$out")
        printf '%s %s %s %s\n' "$name" "$accel" "$total" "${breakdown:-- - - -}" >> "$rows"
        echo "$name ($accel) run $i: ${total}s ${breakdown:+(kernel initrd userspace before-kernel: $breakdown)}"
    done
}

for accel in $ACCELS; do
    boot loisto-health "$accel" '^LOISTO-HEALTH .* dm=verity$'
    boot loisto-multi-user "$accel" "$multi_user"
    if [ -f "$mkosi_img" ]; then
        boot mkosi-multi-user "$accel" "$multi_user" "$mkosi_img"
    else
        echo "no mkosi image at $mkosi_img (run TOOLS=mkosi bench/compare-mkosi.sh first): loisto only"
    fi
done

printf '\n%-18s %-5s %8s %8s %8s %10s %14s %5s\n' image accel total kernel initrd userspace before-kernel runs
for key in $(awk '{print $1 "/" $2}' "$rows" | sort -u); do
    name=${key%/*} accel=${key#*/}
    col() { awk -v n="$name" -v a="$accel" -v c="$1" '$1 == n && $2 == a {print $c}' "$rows" | grep -v -- '^-$' | median; }
    printf '%-18s %-5s %8s %8s %8s %10s %14s %5s\n' "$name" "$accel" "$(col 3)" "$(col 4)" "$(col 5)" "$(col 6)" "$(col 7)" \
        "$(awk -v n="$name" -v a="$accel" '$1 == n && $2 == a' "$rows" | wc -l)"
done
echo "(medians in seconds; total: power-on to the line, as vm measures it)"
