#!/usr/bin/env bash
# Builds the initrd: phases/initrd/init (a bash script) and exactly the programs, libraries
# and kernel modules it calls, copied from the rootfs, so they match its kernel and libc.
# It opens the dm-verity root and starts the real root's systemd, nothing else: no udev, no
# systemd in the initrd (dracut's generic systemd initrd took 5.5 s of a 24 s boot under
# emulation; this one ~2 s, /var and /data mounts included, and it builds in 6 s instead of ~20).
# It runs before the overlay and configuration so that changing those never rebuilds it;
# the result stays at /boot/loisto-initrd.img (the verity phase leaves it out of the OS image).
# Tools: chroot cpio lz4 xz zstd
# Inputs: phases/initrd/
# Cache: snapshot
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

kver=$(rootfs_kernel_version)
echo "kernel $kver"
# Drivers for the disks an appliance boots from, and what opens the verity root; modprobe
# adds what each one depends on. The initrd loads the ones the hardware asks for.
drivers=(
    virtio_pci virtio_blk virtio_scsi                      # QEMU/KVM
    nvme ahci ata_piix sd_mod                              # NVMe, SATA
    xhci_pci ehci_pci ohci_pci uhci_hcd usb_storage uas    # USB sticks and disks
    mmc_block sdhci_pci sdhci_acpi                         # eMMC, SD cards
    dm_mod dm_verity squashfs erofs sha256_ssse3           # the verity root
)
# What the real root needs at once: the file systems of its /etc/fstab (/var and /data),
# which the initrd mounts, and autofs4, which systemd loads (unpacking its XZ file) before it
# starts anything. The initrd loads them while it waits for the disk (ext4 alone is ~0.4 s
# under emulation); systemd finds autofs4 loaded.
root_modules=(ext4 autofs4)
drivers+=("${root_modules[@]}")
# What phases/initrd/init runs (bash runs it; kmod is modprobe, for it and the kernel; od
# reads the verity superblock and dmsetup loads the table veritysetup would).
found=$(chroot "$ROOTFS" bash -c 'for p; do command -v "$p" || { echo "$p" >&2; exit 1; }; done' \
    bash bash mount mkdir sleep switch_root kmod od dmsetup) || {
    echo "the rootfs lacks the program named above (the initrd needs bash, mount, mkdir, sleep, switch_root, kmod, od, dmsetup)" >&2
    exit 1
}
mapfile -t programs <<< "$found"

# Assembled inside the rootfs (its ldd, modprobe and depmod), packed from outside.
stage=/var/tmp/loisto-initrd
root="$ROOTFS$stage"
rm -rf "${root:?}"
trap 'rm -rf "${root:?}"' EXIT
mkdir -p "$root"/{dev,proc,sys,run,sysroot,usr/bin,usr/sbin,usr/lib}
# The same merged-/usr links as the rootfs (bin -> usr/bin, ...), relative so they resolve
# inside the initrd.
for link in bin sbin lib lib64; do
    if [ -L "$ROOTFS/$link" ]; then
        target=$(readlink "$ROOTFS/$link")
        target=${target#/}
        mkdir -p "$root/$target"
        ln -s "$target" "$root/$link"
    fi
done
# The kernel opens the console before it starts /init.
mknod -m 600 "$root/dev/console" c 5 1

# Programs and the libraries they load, each at the path the loader looks for it, with the
# rootfs's symlinks resolved inside the rootfs (not on the host).
mapfile -t files < <(chroot "$ROOTFS" ldd "${programs[@]}" |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(/ {print $1}' | sort -u)
for f in "${programs[@]}" "${files[@]}"; do
    real=$(chroot "$ROOTFS" realpath -e "$f")
    mkdir -p "$root$(dirname "$f")"
    cp -L "$ROOTFS$real" "$root$f"
done
ln -s kmod "$root/usr/bin/modprobe"
[ -e "$root/sbin/modprobe" ] || ln -s ../bin/kmod "$root/usr/sbin/modprobe"
install -m 755 "$PROJECT_DIR/phases/initrd/init" "$root/init"
mkdir -p "$root/etc"
printf '%s\n' "${root_modules[@]}" > "$root/etc/initrd-root-modules"

# Modules with their dependencies, in the rootfs's layout, and an index of just those.
mapfile -t modules < <(chroot "$ROOTFS" modprobe --set-version "$kver" --show-depends -a "${drivers[@]}" |
    awk '$1 == "insmod" {print $2}' | sort -u)
# Stored uncompressed: the initrd is compressed as a whole, and kmod unpacking each XZ
# (Debian's 6.12) or zstd (Arch) module at boot cost ~0.6 s of the initrd under emulation.
for m in "${modules[@]}"; do
    mkdir -p "$root$(dirname "$m")"
    case $m in
        *.ko.xz) xz -dc "$ROOTFS$m" > "$root${m%.xz}" ;;
        *.ko.zst) zstd -qdc "$ROOTFS$m" > "$root${m%.zst}" ;;
        *) cp "$ROOTFS$m" "$root$m" ;;
    esac
done
cp "$ROOTFS/usr/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$root/usr/lib/modules/$kver/"
chroot "$ROOTFS" depmod -b "$stage" "$kver"
echo "${#modules[@]} modules, $(du -sh "$root" | cut -f1) unpacked"

# A reproducible archive: sorted names, one timestamp, root-owned, inode numbers from 0.
# LZ4 (-l: the legacy frame, the only one the kernel reads): it unpacks the 22 MB in 0.46 s
# under emulation where zstd -19 took 0.73 s, for 13 MB instead of 9.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
initrd="$ROOTFS/boot/loisto-initrd.img"
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) |
    lz4 -q -l -12 > "$initrd.partial"
mv "$initrd.partial" "$initrd"
ls -l "$initrd"
