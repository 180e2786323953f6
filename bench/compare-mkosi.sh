#!/usr/bin/env bash
# The edit-build-boot loop, measured: loisto-image against mkosi 24 (bookworm-backports)
# building the same Debian image (same packages, squashfs root with dm-verity, UKI, GPT via
# systemd-repart). For each tool: a clean build, a rebuild after one overlay file changes,
# and a rebuild with nothing changed; medians of RUNS runs, then output sizes. As a floor,
# the time to compress and hash loisto's tree alone (mksquashfs + veritysetup), and the same
# with loisto-image's squashfs writer and no block cache.
#
#   bench/compare-mkosi.sh              # RUNS=3, CLEAN_RUNS=1, both tools
#   TOOLS=loisto bench/compare-mkosi.sh # only loisto (mkosi's earlier results stay in the table)
#
# Needs root and the host tools (scripts/install-host-deps.sh); installs mkosi from
# bookworm-backports if missing. Work happens in $BENCH_DIR (default /var/tmp/loisto-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
CLEAN_RUNS=${CLEAN_RUNS:-1}
TOOLS=${TOOLS:-"loisto mkosi"}
# The OS image's compression (ROOT_COMPRESSION); mkosi's squashfs gets the same.
COMPRESSION=${COMPRESSION:-lz4hc}
ZSTD_LEVEL=${ZSTD_LEVEL:-15}
case "$COMPRESSION" in
    lz4hc) mksquashfs_comp="-comp lz4 -Xhc" ;;
    zstd) mksquashfs_comp="-comp zstd -Xcompression-level $ZSTD_LEVEL" ;;
    *) echo "COMPRESSION=$COMPRESSION: expected lz4hc or zstd" >&2; exit 2 ;;
esac
BENCH_DIR=${BENCH_DIR:-/var/tmp/loisto-bench}
repo=$PWD

cargo build --release -q
bin=$repo/target/release/loisto-image
mkdir -p "$BENCH_DIR"
# Results of tools not run this time are kept: TOOLS=loisto, then TOOLS=mkosi, gives one table.
results="$BENCH_DIR/results.tsv"
touch "$results"
for tool in $TOOLS; do
    rm -rf "${BENCH_DIR:?}/$tool"
    awk -F'\t' -v t="$tool" '$1 != t' "$results" > "$results.new" && mv "$results.new" "$results"
done

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# record TOOL CASE SECONDS
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$results"; }
# timed TOOL CASE COMMAND...: runs it, records the wall time
timed() {
    local tool=$1 case=$2 t0 t1
    shift 2
    t0=$(now)
    "$@" > "$BENCH_DIR/last.log" 2>&1 || { echo "$tool $case failed:"; tail -30 "$BENCH_DIR/last.log"; exit 1; }
    t1=$(now)
    record "$tool" "$case" "$(echo "$t1 - $t0" | bc -l)"
}

# --- loisto-image -----------------------------------------------------------------------
bench_loisto() {
    local p="$BENCH_DIR/loisto"
    mkdir -p "$p"
    cp -a image.conf pacman.conf phases overlay repart.d rauc sysext "$p/"
    rm -f "$p/rauc/keyring.pem"
    local l=(-C "$p" -q --set "ROOT_COMPRESSION=$COMPRESSION" --set "ROOT_ZSTD_LEVEL=$ZSTD_LEVEL")
    for _ in $(seq "$CLEAN_RUNS"); do
        rm -rf "$p/output" "$p/build" "$p/cache"
        timed loisto clean "$bin" "${l[@]}" build
    done
    for i in $(seq "$RUNS"); do
        echo "bench run $i" > "$p/overlay/etc/bench-note"
        timed loisto overlay-change "$bin" "${l[@]}" build
    done
    for _ in $(seq "$RUNS"); do
        timed loisto no-change "$bin" "${l[@]}" build
    done
    # The floor: compress and hash the same tree, nothing else.
    for _ in $(seq "$RUNS"); do
        timed loisto compress+hash-only bash -c "
            mksquashfs '$p/build/rootfs' '$BENCH_DIR/floor.sqfs' -noappend $mksquashfs_comp \
                -quiet -e boot/loisto-initrd.img &&
            veritysetup format '$BENCH_DIR/floor.sqfs' '$BENCH_DIR/floor.verity' > /dev/null"
    done
    # loisto's own squashfs writer with no block cache: what a clean build's sealing costs.
    for _ in $(seq "$RUNS"); do
        timed loisto writer-no-cache+hash bash -c "
            '$bin' squashfs '$p/build/rootfs' '$BENCH_DIR/nocache.sqfs' --compression $COMPRESSION --level $ZSTD_LEVEL \
                --exclude boot/loisto-initrd.img &&
            veritysetup format '$BENCH_DIR/nocache.sqfs' '$BENCH_DIR/nocache.verity' > /dev/null"
    done
    record loisto size-MiB "$(du -m --apparent-size "$p"/output/*.root.squashfs | cut -f1)"
    record loisto disk-MiB-allocated "$(du -m "$p"/output/*.img | cut -f1)"
}

# --- mkosi ------------------------------------------------------------------------------
bench_mkosi() {
    command -v mkosi > /dev/null || apt-get install -y -q -t bookworm-backports mkosi > /dev/null
    command -v depmod > /dev/null || apt-get install -y -q kmod > /dev/null
    command -v cpio > /dev/null || apt-get install -y -q cpio > /dev/null
    local m="$BENCH_DIR/mkosi" mirror packages
    export SYSTEMD_REPART_MKFS_OPTIONS_SQUASHFS="$mksquashfs_comp"
    mkdir -p "$m/mkosi.repart" "$m/mkosi.extra"
    mirror=$(grep -rhsE '^(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ \
        | awk '{print $2}' | head -n 1) || true
    # name/suite (the kernel from DEBIAN_EXTRA_SUITES) becomes plain name: mkosi 24 cannot
    # take a package from bookworm-backports (with that index present, its default initrd's
    # package list fails on systemd-cryptsetup), so its image has bookworm's kernel.
    packages=$(bash -c "source '$repo/image.conf'; echo \"\${DEBIAN_PACKAGES[*]}\"" | sed -E 's|/[^ ]+||g' | tr ' ' ',')
    cp -a "$repo/overlay/." "$m/mkosi.extra/"
    # mkosi 24 reads a mkosi.pkgmngr/ tree on its own: none from an earlier run.
    rm -rf "$m/mkosi.pkgmngr"
    cat > "$m/mkosi.conf" <<EOF
[Distribution]
Distribution=debian
Release=bookworm
${mirror:+LocalMirror=$mirror}

[Output]
Format=disk
ImageId=loisto
ImageVersion=0.1.0
OutputDirectory=output
CacheDirectory=cache

[Content]
# systemd-repart passes this to mksquashfs: the same compressor as loisto's (set below).
Environment=SYSTEMD_REPART_MKFS_OPTIONS_SQUASHFS
Packages=$packages
# mkosi takes the UKI stub from the image (loisto-image from the build host).
Packages=systemd-boot-efi
Bootable=yes
Bootloader=uki
KernelCommandLine=console=ttyS0 panic=10
RemoveFiles=/usr/share/doc /usr/share/man /usr/share/info /usr/share/locale

# mkosi 24 reads Incremental= in [Host] ([Build] is mkosi 25's name and is ignored by 24:
# the first figures here were of a non-incremental mkosi); mkosi summary must say yes.
[Host]
Incremental=yes
EOF
    cat > "$m/mkosi.repart/00-esp.conf" <<'EOF'
[Partition]
Type=esp
Format=vfat
CopyFiles=/efi:/
SizeMinBytes=512M
EOF
    cat > "$m/mkosi.repart/10-root.conf" <<'EOF'
[Partition]
Type=root
Format=squashfs
CopyFiles=/
ExcludeFiles=/efi/
Verity=data
VerityMatchKey=root
Minimize=best
EOF
    cat > "$m/mkosi.repart/11-root-verity.conf" <<'EOF'
[Partition]
Type=root-verity
Verity=hash
VerityMatchKey=root
Minimize=best
EOF
    # The overlay's fstab mounts PARTLABEL=var and PARTLABEL=data: mkosi's disk gets both
    # (made at build time; loisto's image makes /data on first boot). Without them its boot
    # waited out the device timeouts (90 s; 10 s before 05080cf, in every earlier figure).
    cat > "$m/mkosi.repart/20-var.conf" <<'EOF'
[Partition]
Type=var
Label=var
Format=ext4
SizeMinBytes=128M
EOF
    cat > "$m/mkosi.repart/30-data.conf" <<'EOF'
[Partition]
Type=linux-generic
Label=data
Format=ext4
SizeMinBytes=256M
EOF
    mkosi -C "$m" summary | grep -Eq 'Incremental: +yes' || { echo "mkosi did not take Incremental=yes"; exit 1; }
    for _ in $(seq "$CLEAN_RUNS"); do
        rm -rf "$m/output" "$m/cache"
        mkdir -p "$m/cache"
        timed mkosi clean mkosi -C "$m" --force build
    done
    for i in $(seq "$RUNS"); do
        echo "bench run $i" > "$m/mkosi.extra/etc/bench-note"
        timed mkosi overlay-change mkosi -C "$m" --force build
    done
    for _ in $(seq "$RUNS"); do
        timed mkosi no-change mkosi -C "$m" build
    done
    record mkosi disk-MiB-allocated "$(du -m "$m"/output/loisto_0.1.0.raw 2> /dev/null | cut -f1 || echo 0)"
    # The root partition is minimized to its squashfs: comparable with loisto's size-MiB.
    record mkosi size-MiB "$(sfdisk -J "$m"/output/loisto_0.1.0.raw |
        python3 -c 'import json,sys; p=json.load(sys.stdin)["partitiontable"]["partitions"]; print(max(x["size"] for x in p if x["type"].upper().startswith("4F68BCE3")) * 512 >> 20)')"
}

for tool in $TOOLS; do
    "bench_$tool"
done

printf '\n%-8s %-22s %10s %6s\n' tool case median runs
declare -A med
while IFS=$'\t' read -r tool case; do
    values=$(awk -F'\t' -v t="$tool" -v c="$case" '$1 == t && $2 == c {print $3}' "$results")
    med[$tool/$case]=$(median <<< "$values")
    printf '%-8s %-22s %10.1f %6d\n' "$tool" "$case" "${med[$tool/$case]}" "$(wc -l <<< "$values")"
done < <(cut -f1,2 "$results" | sort -u)
echo "(seconds, except the size rows; raw numbers in $results)"
# The two targets: the overlay rebuild against the floor, and against mkosi's.
if [ -n "${med[loisto/overlay-change]:-}" ] && [ -n "${med[loisto/compress+hash-only]:-}" ]; then
    printf 'loisto overlay rebuild / compress+hash floor: %.2fx\n' \
        "$(bc -l <<< "${med[loisto/overlay-change]} / ${med[loisto/compress+hash-only]}")"
fi
if [ -n "${med[loisto/overlay-change]:-}" ] && [ -n "${med[mkosi/overlay-change]:-}" ]; then
    printf 'mkosi overlay rebuild / loisto overlay rebuild: %.2fx\n' \
        "$(bc -l <<< "${med[mkosi/overlay-change]} / ${med[loisto/overlay-change]}")"
fi
