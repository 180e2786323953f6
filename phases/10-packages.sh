#!/usr/bin/env bash
# Installs the extra PACKAGES on top of the base system, inside the rootfs.
# Tools: arch-chroot unshare
# Inputs: PACKAGES PACMAN_CONF pacman.conf
# Cache: snapshot
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

if [ "${#PACKAGES[@]}" -eq 0 ]; then
    echo "PACKAGES is empty: nothing to add"
    exit 0
fi

case "$(rootfs_distro)" in
    debian)
        in_rootfs apt-get update
        # INITRD=No: 15-initrd builds the initrd; kernel hooks need not make their own.
        in_rootfs env DEBIAN_FRONTEND=noninteractive INITRD=No \
            apt-get install -y --no-install-recommends "${PACKAGES[@]}"
        ;;
    arch)
        pacman --root "$ROOTFS" --config "$PROJECT_DIR/${PACMAN_CONF:-pacman.conf}" \
            --cachedir "$CACHE_DIR/pacman/pkg" --noconfirm -S "${PACKAGES[@]}"
        ;;
esac
