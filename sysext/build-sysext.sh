#!/usr/bin/env bash
# Builds one systemd-sysext image, $SYSEXT_OUT, from sysext/$SYSEXT_NAME.conf: the packages
# it names, installed over the base rootfs (only what they add under /usr and /opt is
# kept), plus the files under FILES, with an extension-release matching the base image.
# Run by `loisto-image sysext NAME`, with the phase environment plus SYSEXT_NAME and SYSEXT_OUT.
# Tools: unshare arch-chroot mkfs.erofs?
set -euo pipefail
# The sysext conf's keys (arrays included) and the runner's paths.
# shellcheck source=/dev/null
source "$LOISTO_ENV"
# A conf without PACKAGES installs none.
[ -n "${PACKAGES+set}" ] || PACKAGES=()

work="$BUILD_DIR/sysext/$SYSEXT_NAME"
if [ "${1:-}" != --install-in-overlay ]; then
    rm -rf "$work"
    mkdir -p "$work/tree" "$work/upper" "$work/work" "$work/merged"
fi

# The base image decides what the extension must declare to be accepted.
# shellcheck source=/dev/null
base_id=$(. "$ROOTFS/usr/lib/os-release" && echo "$ID")
# shellcheck source=/dev/null
base_level=$(. "$ROOTFS/usr/lib/os-release" && echo "${SYSEXT_LEVEL:-}")
# shellcheck source=/dev/null
base_version=$(. "$ROOTFS/usr/lib/os-release" && echo "${VERSION_ID:-}")

# Second half of the package install, run by the unshare below in a private mount namespace:
# the base rootfs stays untouched under an overlay and the packages' files land in upper/.
if [ "${1:-}" = --install-in-overlay ]; then
    mount -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$work/upper,workdir=$work/work" "$work/merged"
    # The strip phase removed apt's state directories from the base.
    mkdir -p "$work/merged/var/lib/apt/lists/partial" "$work/merged/var/cache/apt/archives/partial"
    if [ -x "$ROOTFS/usr/bin/apt-get" ]; then
        arch-chroot "$work/merged" apt-get update -q
        for p in "${PACKAGES[@]}"; do
            if ! arch-chroot "$work/merged" apt-cache show "$p" > /dev/null 2>&1; then
                echo "sysext $SYSEXT_NAME: package '$p' is not in the base image's apt sources (check PACKAGES)" >&2
                exit 1
            fi
        done
        arch-chroot "$work/merged" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
    else
        pacman --root "$work/merged" --noconfirm -S "${PACKAGES[@]}"
    fi
    exit 0
fi

if [ "${#PACKAGES[@]}" -gt 0 ]; then
    # The mounts vanish with the namespace when this command ends, however it ends.
    unshare --mount --propagation private bash "$0" --install-in-overlay
    for top in usr opt; do
        if [ -d "$work/upper/$top" ]; then cp -a "$work/upper/$top" "$work/tree/"; fi
    done
    # Overlay whiteouts (files the packages removed) mean nothing in an extension.
    find "$work/tree" -type c -delete
    rm -rf "$work/tree/usr/share/doc" "$work/tree/usr/share/man" "$work/tree/usr/share/lintian"
fi

if [ -n "${FILES:-}" ]; then
    cp -a --no-preserve=ownership "$PROJECT_DIR/$FILES/." "$work/tree/"
fi
# systemd-sysext merges only /usr and /opt; anything else would be silently ignored.
for entry in "$work/tree"/*; do
    case "${entry##*/}" in
        usr|opt) ;;
        *) echo "sysext $SYSEXT_NAME: ${entry##*/}/ is outside /usr and /opt and would never be merged" >&2
           exit 1 ;;
    esac
done

release="$work/tree/usr/lib/extension-release.d/extension-release.$SYSEXT_NAME"
mkdir -p "${release%/*}"
{
    echo "ID=${ID:-$base_id}"
    if [ -n "$base_level" ] && [ -z "${VERSION_ID:-}" ]; then
        echo "SYSEXT_LEVEL=${SYSEXT_LEVEL:-$base_level}"
    else
        echo "VERSION_ID=${VERSION_ID:-$base_version}"
    fi
    echo "SYSEXT_VERSION_ID=$SYSEXT_VERSION"
} > "$release"
cat "$release"

mkdir -p "${SYSEXT_OUT%/*}"
rm -f "$SYSEXT_OUT.partial"
case "${FORMAT:-squashfs}" in
    squashfs) "$LOISTO_IMAGE" squashfs "$work/tree" "$SYSEXT_OUT.partial" --all-root \
        --block-cache "$CACHE_DIR/squashfs-blocks-sysext-$SYSEXT_NAME" ;;
    erofs) mkfs.erofs -zlz4hc --all-root -T "$SOURCE_DATE_EPOCH" "$SYSEXT_OUT.partial" "$work/tree" ;;
    *) echo "FORMAT=$FORMAT is not supported; use squashfs or erofs" >&2; exit 1 ;;
esac
mv "$SYSEXT_OUT.partial" "$SYSEXT_OUT"
ls -l "$SYSEXT_OUT"
