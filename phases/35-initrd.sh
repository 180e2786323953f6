#!/usr/bin/env bash
# Builds the initrd inside the rootfs with the rootfs's own dracut, generic (not host-only),
# with what it takes to open a dm-verity root: systemd, systemd-veritysetup and dm.
# The kernel and initrd go to $BUILD_DIR/boot for the UKI phase.
# Tools: arch-chroot unshare
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

kver=$(rootfs_kernel_version)
echo "kernel $kver"
mkdir -p "$BUILD_DIR/boot"

# dracut needs /proc, /sys and /dev; in_rootfs mounts them in a private namespace.
# (Its /tmp is a throwaway tmpfs, so the initrd is written to /boot.)
in_rootfs dracut --force --no-hostonly --reproducible \
    --add "systemd systemd-veritysetup dm" --omit "plymouth" \
    /boot/loisto-initrd.img "$kver"
mv "$ROOTFS/boot/loisto-initrd.img" "$BUILD_DIR/boot/initrd.img"

# Arch keeps the kernel next to its modules; Debian in /boot.
for k in "$ROOTFS/usr/lib/modules/$kver/vmlinuz" "$ROOTFS/boot/vmlinuz-$kver"; do
    if [ -f "$k" ]; then
        cp "$k" "$BUILD_DIR/boot/vmlinuz"
        break
    fi
done
[ -f "$BUILD_DIR/boot/vmlinuz" ] || { echo "no kernel image found for $kver" >&2; exit 1; }
ls -l "$BUILD_DIR/boot"
