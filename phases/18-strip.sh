#!/usr/bin/env bash
# Removes what an appliance never reads (STRIP_PATHS) and the firmware it does not need
# (everything outside FIRMWARE_KEEP, when that list is not empty). It runs on what the
# packages brought, before the project's own files go in: an overlay or configure edit never
# strips again, and nothing the overlay adds is stripped.
# Inputs: STRIP_PATHS FIRMWARE_KEEP
# Cache: snapshot
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

before=$(du -sm "$ROOTFS" | cut -f1)
shopt -s nullglob
for pattern in "${STRIP_PATHS[@]}"; do
    # The pattern is a glob relative to the rootfs, expanded here on purpose.
    # shellcheck disable=SC2206
    matches=("$ROOTFS"/$pattern)
    for m in "${matches[@]}"; do
        rm -rf --one-file-system "$m"
    done
done

fw="$ROOTFS/usr/lib/firmware"
if [ "${#FIRMWARE_KEEP[@]}" -gt 0 ] && [ -d "$fw" ]; then
    keep=$(mktemp -d "$BUILD_DIR/firmware.XXXXXX")
    for name in "${FIRMWARE_KEEP[@]}"; do
        if [ -e "$fw/$name" ]; then cp -a "$fw/$name" "$keep/"; fi
    done
    rm -rf "${fw:?}"/*
    cp -a "$keep/." "$fw/"
    rm -rf "$keep"
fi

# Debian's own initramfs hook output is unused: the UKI carries ours. The kernel stays in
# /boot, so an exported rootfs can be rebuilt (BOOTSTRAP=rootfs) with its own kernel.
rm -f "${ROOTFS:?}"/boot/initrd.img-*
# /var is a fresh tmpfs or partition on the device; keep only its skeleton.
mkdir -p "$ROOTFS/var/log"
echo "rootfs: ${before} MiB -> $(du -sm "$ROOTFS" | cut -f1) MiB"
