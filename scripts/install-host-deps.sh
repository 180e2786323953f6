#!/usr/bin/env bash
# Installs the host tools loisto-image needs to build, boot and test images.
# Debian 12 gets systemd 254 (ukify, offline repart), qemu and mkosi from bookworm-backports;
# newer Debian/Ubuntu releases have them in their main suites; Arch has them in its repos.
set -euo pipefail

[ "$(id -u)" -eq 0 ] || { echo "install-host-deps.sh: run as root (sudo)" >&2; exit 2; }

# shellcheck disable=SC1091
. /etc/os-release

DEBIAN_PKGS=(
  mmdebstrap squashfs-tools erofs-utils cryptsetup-bin zstd cpio lz4 xz-utils
  systemd systemd-boot-efi python3-pefile binutils
  mtools dosfstools fdisk faketime
  qemu-system-x86 qemu-utils ovmf
  rauc openssl sbsigntool efitools softhsm2 libengine-pkcs11-openssl opensc
  pacman-package-manager makepkg arch-install-scripts fakeroot libarchive-tools
  shellcheck util-linux git curl python3-virt-firmware acl time busybox-static
  bmap-tools squashfs-tools-ng
)
# These come from bookworm-backports on Debian 12 (python3-virt-firmware: `vm --secure-boot`
# enrolls keys with virt-fw-vars, and the update test reads the VM's UEFI variables with it).
DEBIAN_BACKPORTS=(systemd systemd-boot-efi qemu-system-x86 qemu-utils mmdebstrap python3-virt-firmware)

ARCH_PKGS=(
  arch-install-scripts pacman squashfs-tools erofs-utils cryptsetup zstd cpio lz4 xz systemd systemd-ukify
  python-pefile mtools dosfstools libfaketime qemu-system-x86 edk2-ovmf rauc openssl sbsigntools efitools virt-firmware softhsm libp11 opensc
  mmdebstrap shellcheck util-linux git python libarchive binutils acl time busybox
)

enable_bookworm_backports() {
  local src=/etc/apt/sources.list.d/debian.sources
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return
  fi
  if [ -f "$src" ]; then
    # Same mirror as the main suite: append the suite to the deb822 Suites: line.
    sed -i -E 's/^(Suites:.*\bbookworm\b(-updates)?)$/\1 bookworm-backports/' "$src"
    grep -q 'bookworm-backports' "$src" && return
  fi
  local uri
  uri=$(grep -rhsE '^deb +[^ ]+ +bookworm +main' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '{print $2}' | head -n 1)
  [ -n "$uri" ] || { echo "install-host-deps.sh: cannot find the Debian mirror in apt sources" >&2; exit 1; }
  echo "deb $uri bookworm-backports main" > /etc/apt/sources.list.d/bookworm-backports.list
}

case "${ID}:${VERSION_CODENAME:-}" in
  debian:bookworm)
    enable_bookworm_backports
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports "${DEBIAN_BACKPORTS[@]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${DEBIAN_PKGS[@]}"
    ;;
  debian:*|ubuntu:*)
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${DEBIAN_PKGS[@]}" systemd-ukify systemd-repart
    ;;
  arch:*)
    pacman -Sy --needed --noconfirm "${ARCH_PKGS[@]}"
    ;;
  *)
    echo "install-host-deps.sh: unsupported host '$ID'; install by hand what 'loisto-image doctor' lists" >&2
    exit 1
    ;;
esac
