#!/usr/bin/env bash
# Runner overhead: a build of 20 no-op phases, against running the same 20 scripts with
# plain bash. Prints the median of RUNS builds and the overhead per phase.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-15}
cargo build --release -q
BIN=$PWD/target/release/loisto-image

proj=$(mktemp -d)
trap 'rm -rf "$proj"' EXIT
mkdir "$proj/phases"
printf 'IMAGE_ID=bench\nIMAGE_VERSION=1\nSOURCE_DATE_EPOCH=0\n' > "$proj/image.conf"
for i in $(seq -w 10 29); do echo ':' > "$proj/phases/$i-noop.sh"; done

now_us() { echo $(( $(date +%s%N) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

runner=() bash_only=()
for _ in $(seq "$RUNS"); do
  t0=$(now_us); "$BIN" -C "$proj" -q build; t1=$(now_us)
  runner+=($((t1 - t0)))
  t0=$(now_us); for f in "$proj"/phases/*.sh; do bash "$f" </dev/null; done; t1=$(now_us)
  bash_only+=($((t1 - t0)))
done
r=$(printf '%s\n' "${runner[@]}" | median)
b=$(printf '%s\n' "${bash_only[@]}" | median)
printf '20 no-op phases, median of %d runs\n' "$RUNS"
printf '  loisto-image build : %7.1f ms\n' "$(echo "$r / 1000" | bc -l)"
printf '  plain bash loop    : %7.1f ms\n' "$(echo "$b / 1000" | bc -l)"
printf '  overhead per phase : %7.2f ms\n' "$(echo "($r - $b) / 20 / 1000" | bc -l)"
