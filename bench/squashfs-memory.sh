#!/usr/bin/env bash
# Peak memory (RSS) and time of the squashfs writer against mksquashfs on the same trees: the
# last build's rootfs (no block cache, then a cold and a warm block cache) and a tree holding
# one 4 GiB file of incompressible data. The writer keeps at most a window of blocks in
# memory, so its peak should not grow with the file size.
#
#   bench/squashfs-memory.sh                    # needs a build (build/rootfs) and ~9 GiB in $BENCH_DIR
#   ROOTFS=/some/tree bench/squashfs-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOTFS=${ROOTFS:-build/rootfs}
BENCH_DIR=${BENCH_DIR:-/var/tmp/loisto-bench/squashfs-memory}
LEVEL=${LEVEL:-15}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
[ -d "$ROOTFS" ] || { echo "no tree at $ROOTFS: run 'loisto-image build' first or set ROOTFS" >&2; exit 2; }
cargo build --release -q
bin=$PWD/target/release/loisto-image
rm -rf "$BENCH_DIR" && mkdir -p "$BENCH_DIR/big"

# One line per run: what, peak RSS in MiB, seconds.
measure() {
    local what=$1; shift
    /usr/bin/time -f "%M %e" -o "$BENCH_DIR/time" "$@" > /dev/null
    read -r kb secs < "$BENCH_DIR/time"
    printf '%-44s %8d MiB %8.1f s\n' "$what" "$((kb / 1024))" "$secs"
}

measure "rootfs: loisto-image, no cache" \
    "$bin" squashfs "$ROOTFS" "$BENCH_DIR/a.sqfs" --level "$LEVEL" --exclude boot/loisto-initrd.img
measure "rootfs: loisto-image, cold block cache" \
    "$bin" squashfs "$ROOTFS" "$BENCH_DIR/b.sqfs" --level "$LEVEL" --exclude boot/loisto-initrd.img \
    --block-cache "$BENCH_DIR/cache"
measure "rootfs: loisto-image, warm block cache" \
    "$bin" squashfs "$ROOTFS" "$BENCH_DIR/b.sqfs" --level "$LEVEL" --exclude boot/loisto-initrd.img \
    --block-cache "$BENCH_DIR/cache"
measure "rootfs: mksquashfs" \
    mksquashfs "$ROOTFS" "$BENCH_DIR/m.sqfs" -noappend -quiet -comp zstd -Xcompression-level "$LEVEL" \
    -e boot/loisto-initrd.img
rm -f "$BENCH_DIR"/*.sqfs

head -c 4G /dev/urandom > "$BENCH_DIR/big/data"
measure "4 GiB incompressible file: loisto-image" \
    "$bin" squashfs "$BENCH_DIR/big" "$BENCH_DIR/a.sqfs" --level 1
rm -f "$BENCH_DIR/a.sqfs"
measure "4 GiB incompressible file: mksquashfs" \
    mksquashfs "$BENCH_DIR/big" "$BENCH_DIR/m.sqfs" -noappend -quiet -comp zstd -Xcompression-level 1
rm -rf "$BENCH_DIR"
