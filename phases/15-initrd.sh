#!/usr/bin/env bash
# Builds the initrd inside the rootfs with the rootfs's own dracut, generic (not host-only),
# with what it takes to open a dm-verity root: systemd, systemd-veritysetup and dm, and the
# drivers of the disks an appliance boots from.
# It runs before the overlay and configuration so that changing those never rebuilds it;
# the result stays at /boot/loisto-initrd.img (the verity phase leaves it out of the OS image).
# Tools: arch-chroot unshare
# Inputs: none
# Cache: snapshot
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

kver=$(rootfs_kernel_version)
echo "kernel $kver"
# Exactly these kernel modules (and what they depend on), instead of every storage, network
# and input driver of a generic initrd (803 modules, 133 MB unpacked, 38 MB gzip): the kernel
# unpacks it and udev loads its modules on every boot.
drivers=(
    virtio_pci virtio_blk virtio_scsi                      # QEMU/KVM
    nvme ahci ata_piix sd_mod                              # NVMe, SATA
    xhci_pci ehci_pci ohci_pci uhci_hcd usb_storage uas    # USB sticks and disks
    mmc_block sdhci_pci sdhci_acpi                         # eMMC, SD cards
    dm_mod dm_verity squashfs erofs                        # the verity root
)
# What dracut adds by default that a verity root never uses: LUKS (with it every crypto
# module of the kernel), RAID, thin/cache/snapshot targets, bcache and the cluster lock
# manager (the dm module copies all of drivers/md), and the shutdown and /usr-mount hooks.
# Without them the initrd is ~40% smaller, which OVMF loads and the kernel unpacks on every
# boot, and dracut writes it faster.
omit_modules=(plymouth nvdimm overlay-root lunmask resume virtiofs qemu kernel-modules-extra
    crypt terminfo usrmount shutdown)
omit_drivers=(md_mod md_cluster raid0 raid1 raid10 raid456 linear multipath faulty bcache dlm
    'dm_(bio_prison|cache.*|clone|crypt|delay|ebs|era|flakey|integrity|log.*|mirror)'
    'dm_(multipath|persistent_data|queue_length|raid|region_hash|round_robin|service_time)'
    'dm_(snapshot|switch|thin_pool|unstripe|writecache|zero|zoned)')
# Files for the initrd only, from a scratch directory in the rootfs (arch-chroot hides /tmp).
extra=/var/tmp/loisto-initrd-extra
rm -rf "${ROOTFS:?}$extra"
trap 'rm -rf "${ROOTFS:?}$extra"' EXIT
mkdir -p "$ROOTFS$extra/etc/systemd/system"
# dracut's pre-udev hook, masked: it only loads dm_mod (opening /dev/mapper/control loads it
# anyway) and reads rd.driver.* options this image does not use, in shell, before udev
# starts: the initrd is 1.2 s shorter under QEMU -icount without it.
ln -s /dev/null "$ROOTFS$extra/etc/systemd/system/dracut-pre-udev.service"
# dracut needs /proc, /sys and /dev; in_rootfs mounts them in a private namespace.
# zstd: the kernel unpacks it several times faster than gzip -9.
in_rootfs dracut --force --no-hostonly --reproducible --no-early-microcode \
    --add "systemd systemd-veritysetup dm" --omit "${omit_modules[*]}" \
    --drivers "${drivers[*]}" --omit-drivers "${omit_drivers[*]}" --compress zstd \
    --include "$extra" / \
    /boot/loisto-initrd.img "$kver"
# dracut falls back to gzip without a word when the compressor it was asked for is missing
# from the tree: check the result's magic number.
magic=$(od -An -tx1 -N4 "$ROOTFS/boot/loisto-initrd.img" | tr -d ' ')
if [ "$magic" != 28b52ffd ]; then
    echo "the initrd is not zstd-compressed (magic $magic): install zstd in the rootfs (DEBIAN_PACKAGES, ARCH_PACKAGES)" >&2
    exit 1
fi
ls -l "$ROOTFS/boot"
