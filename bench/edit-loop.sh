#!/usr/bin/env bash
# The development loop, measured: change one overlay file, rebuild, boot the result under TCG
# to the health line (a fresh copy of the disk, as `vm` boots it). RUNS times; prints each
# run's rebuild and boot time and the medians. The file it writes
# (overlay/etc/loisto-edit-loop) is removed again, and a last build puts output/ back.
#
#   bench/edit-loop.sh                  # RUNS=3, through OVMF as a device boots
#   VM_ARGS=--direct-kernel bench/edit-loop.sh   # the kernel started directly (vm --direct-kernel)
#
# Needs a build first (loisto-image build) and the host tools.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
VM_ARGS=${VM_ARGS:-}
bin=${LOISTO_IMAGE:-target/release/loisto-image}
[ -x "$bin" ] || cargo build --release -q
edit=overlay/etc/loisto-edit-loop
trap 'rm -f "$edit"; "$bin" build -q > /dev/null 2>&1 || true' EXIT
health='^LOISTO-HEALTH .* dm=verity$'

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rows=$(mktemp)
for i in $(seq "$RUNS"); do
    echo "edit $i $(date +%s%N)" > "$edit"
    start=$(date +%s%N)
    "$bin" build -q
    built=$(date +%s%N)
    # shellcheck disable=SC2086 # VM_ARGS is a list of options
    "$bin" vm --headless --accel tcg --expect "$health" --timeout 600 $VM_ARGS > /dev/null 2>&1
    done_at=$(date +%s%N)
    awk -v s="$start" -v b="$built" -v d="$done_at" \
        'BEGIN { printf "%.1f %.1f %.1f\n", (b - s) / 1e9, (d - b) / 1e9, (d - s) / 1e9 }' | tee -a "$rows"
done
printf '\n%-10s %8s %8s %8s\n' "" rebuild boot total
printf '%-10s %8s %8s %8s\n' median "$(cut -d' ' -f1 "$rows" | median)" "$(cut -d' ' -f2 "$rows" | median)" "$(cut -d' ' -f3 "$rows" | median)"
echo "(seconds: overlay edit -> build -> health line under TCG, $RUNS runs${VM_ARGS:+, vm $VM_ARGS})"
rm -f "$rows"
