#!/usr/bin/env bash
# Builds the initrd inside the rootfs with the rootfs's own dracut, generic (not host-only),
# with what it takes to open a dm-verity root: systemd, systemd-veritysetup and dm.
# It runs before the overlay and configuration so that changing those never rebuilds it;
# the result stays at /boot/loisto-initrd.img (the verity phase leaves it out of the OS image).
# Tools: arch-chroot unshare
# Inputs: none
# Cache: snapshot
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

kver=$(rootfs_kernel_version)
echo "kernel $kver"
# dracut needs /proc, /sys and /dev; in_rootfs mounts them in a private namespace.
in_rootfs dracut --force --no-hostonly --reproducible \
    --add "systemd systemd-veritysetup dm" --omit "plymouth" \
    /boot/loisto-initrd.img "$kver"
ls -l "$ROOTFS/boot"
