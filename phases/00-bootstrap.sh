#!/usr/bin/env bash
# Bootstraps a fresh base system into $ROOTFS with the distribution's own tool:
# mmdebstrap for Debian, pacstrap for Arch.
# Tools: mmdebstrap|pacstrap
# Inputs: DISTRO DEBIAN_SUITE DEBIAN_MIRROR DEBIAN_PACKAGES ARCH_PACKAGES PACMAN_CONF pacman.conf
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

# DISTRO unset: follow the build host, as mkosi does.
if [ -z "${DISTRO:-}" ]; then
    # shellcheck source=/dev/null
    host=$(. /etc/os-release && echo " $ID ${ID_LIKE:-} ")
    case "$host" in
        *" arch "*) DISTRO=arch ;;
        *" debian "*) DISTRO=debian ;;
        *) echo "cannot pick DISTRO from this host ($host); set DISTRO=debian or DISTRO=arch in image.conf" >&2
           exit 1 ;;
    esac
fi
echo "bootstrapping $DISTRO into $ROOTFS"

# Start from nothing: a half-finished tree from an earlier build must not leak in.
rm -rf --one-file-system "${ROOTFS:?}"
mkdir -p "$ROOTFS"

case "$DISTRO" in
    debian)
        mirror=${DEBIAN_MIRROR:-}
        if [ -z "$mirror" ]; then
            # The host's own Debian mirror, so the build works wherever the host's apt does.
            mirror=$(grep -rhsE '^(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ \
                | awk '{print $2}' | head -n 1) || true
        fi
        include=$(IFS=,; echo "${DEBIAN_PACKAGES[*]}")
        mmdebstrap --variant=minbase --include="$include" \
            --aptopt='Acquire::Retries "3"' \
            "$DEBIAN_SUITE" "$ROOTFS" ${mirror:+"$mirror"}
        ;;
    arch)
        mkdir -p "$CACHE_DIR/pacman/pkg"
        # -c: use the host cache dir given in pacman.conf; -G: keep the host keyring out;
        # -M: keep the host mirrorlist out: the project's pacman.conf decides both.
        pacstrap -C "${PACMAN_CONF:-$PROJECT_DIR/pacman.conf}" -c -G -M "$ROOTFS" "${ARCH_PACKAGES[@]}"
        ;;
    *)
        echo "DISTRO=$DISTRO is not supported; use debian or arch" >&2
        exit 1
        ;;
esac
