#!/usr/bin/env bash
# Makes the base system in $ROOTFS: bootstraps DISTRO with its own tool (mmdebstrap for
# Debian, pacstrap for Arch), or with BOOTSTRAP=rootfs imports an existing tree
# (ROOTFS_TAR or ROOTFS_DIR) with ownership, modes, xattrs and device nodes kept.
# Tools: mmdebstrap|pacstrap|bsdtar
# Tools if DISTRO=debian: mmdebstrap
# Tools if DISTRO=arch: pacstrap
# Tools if BOOTSTRAP=rootfs: bsdtar
# Cache: snapshot
# Inputs: BOOTSTRAP ROOTFS_TAR $ROOTFS_TAR ROOTFS_DIR DISTRO DEBIAN_SUITE DEBIAN_EXTRA_SUITES DEBIAN_MIRROR DEBIAN_PACKAGES ARCH_PACKAGES PACMAN_CONF pacman.conf
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

# The kernel, the UKI stub, OVMF and the partition types used here are x86_64's.
if [ "${ARCH:-x86_64}" != x86_64 ]; then
    echo "ARCH=$ARCH: loisto-image builds x86_64 images only; set ARCH=x86_64 in image.conf" >&2
    exit 1
fi

# Start from nothing: a half-finished tree from an earlier build must not leak in.
rm -rf --one-file-system "${ROOTFS:?}"
mkdir -p "$ROOTFS"

if [ "${BOOTSTRAP:-distro}" = rootfs ]; then
    if [ -n "${ROOTFS_TAR:-}" ]; then
        tarball=$(realpath -e "$ROOTFS_TAR")
        echo "importing $tarball"
        # Refuse members that could land outside $ROOTFS before unpacking anything.
        /usr/bin/python3 "$PROJECT_DIR/phases/lib/check-rootfs-tar.py" "$tarball"
        # bsdtar also refuses `..` and extracting through symlinks on its own (no -P).
        bsdtar -x -p --xattrs --acls --numeric-owner -f "$tarball" -C "$ROOTFS"
    elif [ -n "${ROOTFS_DIR:-}" ]; then
        echo "importing $ROOTFS_DIR"
        cp -a "$(realpath -e "$ROOTFS_DIR")/." "$ROOTFS/"
    else
        echo "BOOTSTRAP=rootfs needs ROOTFS_TAR=file.tar or ROOTFS_DIR=dir in image.conf" >&2
        exit 1
    fi
    echo "imported a $(rootfs_distro) tree"
    exit 0
fi

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

case "$DISTRO" in
    debian)
        mirror=${DEBIAN_MIRROR:-}
        if [ -z "$mirror" ]; then
            # The host's own Debian mirror, so the build works wherever the host's apt does.
            mirror=$(grep -rhsE '^(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ \
                | awk '{print $2}' | head -n 1) || true
        fi
        # DEBIAN_EXTRA_SUITES: each one from the mirror of DEBIAN_SUITE's line in the
        # sources.list mmdebstrap writes (its default mirror when none is known), added
        # before the first apt update.
        hooks=()
        for suite in "${DEBIAN_EXTRA_SUITES[@]}"; do
            list='"$1/etc/apt/sources.list.d/loisto-extra-suites.list"'
            hooks+=(--setup-hook="sed -n -E 's/^(deb .* )$DEBIAN_SUITE( .*)\$/\\1$suite\\2/p' \"\$1/etc/apt/sources.list\" >> $list && grep -q ' $suite ' $list")
        done
        include=$(IFS=,; echo "${DEBIAN_PACKAGES[*]}")
        # INITRD=No: the kernel's postinst would run dracut for an initrd that 18-strip
        # deletes (15-initrd builds the real one); that was ~45 s of an 80 s bootstrap.
        INITRD=No mmdebstrap --variant=minbase --include="$include" \
            --aptopt='Acquire::Retries "3"' \
            "${hooks[@]}" "$DEBIAN_SUITE" "$ROOTFS" ${mirror:+"$mirror"}
        ;;
    arch)
        mkdir -p "$CACHE_DIR/pacman/pkg"
        # -C: the project's repositories and signature policy; -G, -M: leave the host's
        # keyring and mirrorlist out; -c with --cachedir: keep downloads in CACHE_DIR.
        pacstrap -C "$PROJECT_DIR/${PACMAN_CONF:-pacman.conf}" -G -M -c "$ROOTFS" \
            --cachedir "$CACHE_DIR/pacman/pkg" "${ARCH_PACKAGES[@]}"
        ;;
    *)
        echo "DISTRO=$DISTRO is not supported; use debian or arch" >&2
        exit 1
        ;;
esac
