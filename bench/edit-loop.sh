#!/usr/bin/env bash
# The development loop, measured: change one overlay file, rebuild, boot the result under TCG
# to the health line. RUNS times; prints each run's rebuild and boot time and the medians.
# The file it writes (overlay/etc/loisto-edit-loop) is removed again, and a last build puts
# output/ back.
#
# By default the loop boots a kept development machine (`vm --state DIR --refresh`: the new
# slot A written into its disk, its UEFI variables and /data kept), through OVMF as a device
# boots; the machine is made (and boots for the first time) before the timed runs.
#
#   bench/edit-loop.sh                          # RUNS=3, kept machine, vm --refresh
#   FRESH=1 bench/edit-loop.sh                  # a fresh copy of the disk each time (plain vm)
#   FRESH=1 VM_ARGS=--direct-kernel bench/edit-loop.sh   # the kernel started directly
#
# Needs a build first (loisto-image build) and the host tools.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
FRESH=${FRESH:-}
VM_ARGS=${VM_ARGS:-}
bin=${LOISTO_IMAGE:-target/release/loisto-image}
[ -x "$bin" ] || cargo build --release -q
edit=overlay/etc/loisto-edit-loop
machine=$(mktemp -d /var/tmp/loisto-edit-loop.XXXXXX)
trap 'rm -rf "$edit" "$machine"; "$bin" build -q > /dev/null 2>&1 || true' EXIT
health='^LOISTO-HEALTH .* dm=verity$'
vm=("$bin" vm --headless --accel tcg --expect "$health" --timeout 600)
if [ -z "$FRESH" ]; then
    vm+=(--state "$machine/dev" --refresh)
    "$bin" build -q
    "${vm[@]}" > /dev/null 2>&1
fi

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rows=$(mktemp)
for i in $(seq "$RUNS"); do
    echo "edit $i $(date +%s%N)" > "$edit"
    start=$(date +%s%N)
    "$bin" build -q
    built=$(date +%s%N)
    # shellcheck disable=SC2086 # VM_ARGS is a list of options
    "${vm[@]}" $VM_ARGS > /dev/null 2>&1
    done_at=$(date +%s%N)
    awk -v s="$start" -v b="$built" -v d="$done_at" \
        'BEGIN { printf "%.1f %.1f %.1f\n", (b - s) / 1e9, (d - b) / 1e9, (d - s) / 1e9 }' | tee -a "$rows"
done
printf '\n%-10s %8s %8s %8s\n' "" rebuild boot total
printf '%-10s %8s %8s %8s\n' median "$(cut -d' ' -f1 "$rows" | median)" "$(cut -d' ' -f2 "$rows" | median)" "$(cut -d' ' -f3 "$rows" | median)"
how="a kept machine, vm --refresh"
[ -z "$FRESH" ] || how="a fresh disk each time"
echo "(seconds: overlay edit -> build -> health line under TCG, $RUNS runs, $how${VM_ARGS:+, vm $VM_ARGS})"
rm -f "$rows"
