#!/usr/bin/env bash
# Boot time, measured: RUNS boots of the default image through OVMF under TCG (and KVM where
# it works), each from power-on of a fresh copy of the disk to the health line, with the
# guest's own breakdown (LOISTO-BOOT: kernel, initrd, userspace) and the time before the
# kernel as vm sees it; and the same for a power-on after the first (loisto-again), which is
# what a device's user waits for every day. For comparison, the mkosi image that
# bench/compare-mkosi.sh builds (same packages), timed to the point both images reach:
# getty.target (mkosi's image never reaches multi-user.target in this VM).
#
#   bench/boot.sh                 # RUNS=5, tcg; the loisto image from output/, mkosi's if built
#   RUNS=9 ACCELS="tcg kvm" bench/boot.sh
#   RUNS=1 ACCELS=icount bench/boot.sh
#
# icount is TCG with QEMU's -icount: the guest's clock counts executed instructions instead
# of following the host's, so its own figures (uptime, kernel, initrd, userspace) do not move
# with the host's load and one run compares two images to within ~0.5%. It runs one vCPU
# thread at a time (~3x slower than tcg in wall time) and its seconds are instruction-seconds:
# compare icount figures with each other only. total and before-kernel are wall time there.
#
# Needs a built image (loisto-image build) and the host tools.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
ACCELS=${ACCELS:-tcg}
# mkosi's initrd (every module of the kernel) does not fit in 1 GiB: "Initramfs unpacking
# failed: write error". Both images get the same memory.
MEMORY=${MEMORY:-2G}
BENCH_DIR=${BENCH_DIR:-/var/tmp/loisto-bench}
bin=${LOISTO_IMAGE:-target/release/loisto-image}
[ -x "$bin" ] || cargo build --release -q
mkosi_img="$BENCH_DIR/mkosi/output/loisto_0.1.0.raw"
getty='Reached target .*getty.target'
health='^LOISTO-HEALTH .* dm=verity$'

# vm's options for ACCELS word $1 (icount: see above), into the array vm_accel.
accel_args() {
    case "$1" in
        icount) vm_accel=(--accel tcg --qemu-arg=-icount '--qemu-arg=shift=3,sleep=off') ;;
        *) vm_accel=(--accel "$1") ;;
    esac
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }

# boot NAME ACCEL REGEX IMAGE...: one row per run in $rows: name accel total kernel initrd userspace before-kernel
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
boot() {
    local name=$1 accel=$2 regex=$3 out total breakdown uptime
    shift 3
    accel_args "$accel"
    for i in $(seq "$RUNS"); do
        out=$("$bin" vm --headless "${vm_accel[@]}" --memory "$MEMORY" --expect "$regex" --timeout 900 "$@" 2>&1) || {
            echo "$name ($accel) run $i did not reach /$regex/:"; tail -20 <<< "$out"
            printf '%s %s failed - - - - -\n' "$name" "$accel" >> "$rows"
            return 0; }
        # "matched after 25.3s" or, past a minute, "matched after 1m25s"
        total=$(sed -n 's/^matched after \([0-9m.]*\)s.*/\1/p' <<< "$out" | awk -Fm '{print (NF > 1 ? $1 * 60 + $2 : $1)}')
        # vm's "boot:" line: power-on to kernel Xs ..., kernel=Ys initrd=Zs userspace=Ws ...
        breakdown=$(sed -n 's/^boot: power-on to kernel \([0-9.]*\)s.* kernel=\([0-9.-]*\)s\{0,1\} initrd=\([0-9.-]*\)s\{0,1\} userspace=\([0-9.-]*\)s\{0,1\} .*/\2 \3 \4 \1/p' <<< "$out")
        uptime=$(sed -n 's/^boot: .* uptime=\([0-9.]*\)s.*/\1/p' <<< "$out")
        printf '%s %s %s %s %s\n' "$name" "$accel" "$total" "${breakdown:-- - - -}" "${uptime:--}" >> "$rows"
        echo "$name ($accel) run $i: ${total}s ${breakdown:+(kernel initrd userspace before-kernel: $breakdown)}${uptime:+ guest uptime ${uptime}s}"
    done
}

for accel in $ACCELS; do
    boot loisto-health "$accel" "$health"
    boot loisto-getty "$accel" "$getty"
    # Every power-on after the first: /data exists, the boot entries are there (a fresh copy
    # of the disk does both on its first boot). One boot to get there, then RUNS timed ones.
    state="$BENCH_DIR/state-$accel"
    rm -rf "$state" && mkdir -p "$state"
    accel_args "$accel"
    "$bin" vm --headless "${vm_accel[@]}" --memory "$MEMORY" --expect "$health" --timeout 900 --state "$state" > /dev/null 2>&1
    boot loisto-again "$accel" "$health" --state "$state"
    if [ -f "$mkosi_img" ]; then
        boot mkosi-getty "$accel" "$getty" "$mkosi_img"
    else
        echo "no mkosi image at $mkosi_img (run TOOLS=mkosi bench/compare-mkosi.sh first): loisto only"
    fi
done

printf '\n%-18s %-6s %8s %8s %8s %10s %14s %8s %5s\n' image accel total kernel initrd userspace before-kernel uptime runs
for key in $(awk '{print $1 "/" $2}' "$rows" | sort -u); do
    name=${key%/*} accel=${key#*/}
    col() { awk -v n="$name" -v a="$accel" -v c="$1" '$1 == n && $2 == a {print $c}' "$rows" | grep -E '^[0-9.]+$' | median; }
    printf '%-18s %-6s %8s %8s %8s %10s %14s %8s %5s\n' "$name" "$accel" "$(col 3)" "$(col 4)" "$(col 5)" "$(col 6)" "$(col 7)" "$(col 8)" \
        "$(awk -v n="$name" -v a="$accel" '$1 == n && $2 == a && $3 != "failed"' "$rows" | wc -l)"
done
echo "(medians in seconds; total: power-on to the line, as vm measures it; uptime: the guest's own clock at the health line)"
