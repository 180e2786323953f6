# Helpers shared by the phase scripts: `source "$PROJECT_DIR/phases/lib/common.sh"`.
# shellcheck shell=bash

# Loads the resolved image.conf (arrays included) that the runner wrote for this build.
# shellcheck source=/dev/null
source "$LOISTO_ENV"

# The distribution of the tree in $ROOTFS, from its os-release: debian or arch.
rootfs_distro() {
    local id="" id_like=""
    # shellcheck source=/dev/null
    id=$(. "$ROOTFS/usr/lib/os-release" && echo "$ID") || true
    # shellcheck source=/dev/null
    id_like=$(. "$ROOTFS/usr/lib/os-release" && echo "${ID_LIKE:-}") || true
    case " $id $id_like " in
        *" arch "*) echo arch ;;
        *" debian "*) echo debian ;;
        *) echo "unsupported distribution '$id' in $ROOTFS/usr/lib/os-release (expected debian or arch)" >&2
           return 1 ;;
    esac
}

# The kernel version installed in $ROOTFS (the one directory under usr/lib/modules).
rootfs_kernel_version() {
    local versions=("$ROOTFS"/usr/lib/modules/*)
    if [ "${#versions[@]}" -ne 1 ] || [ ! -d "${versions[0]}" ]; then
        echo "expected exactly one kernel under $ROOTFS/usr/lib/modules, found: ${versions[*]##*/}" >&2
        return 1
    fi
    basename "${versions[0]}"
}

# Runs a command inside $ROOTFS with /proc, /sys and /dev mounted, in a private mount
# namespace: when the command ends (or the build is killed) nothing stays mounted on the host.
in_rootfs() {
    unshare --mount --propagation private arch-chroot "$ROOTFS" "$@"
}

# The kernel image in $ROOTFS: Arch keeps it next to its modules, Debian in /boot.
rootfs_kernel() {
    local kver k
    kver=$(rootfs_kernel_version)
    for k in "$ROOTFS/usr/lib/modules/$kver/vmlinuz" "$ROOTFS/boot/vmlinuz-$kver"; do
        if [ -f "$k" ]; then echo "$k"; return 0; fi
    done
    echo "no kernel image found for $kver in $ROOTFS" >&2
    return 1
}

# Artifact names all start with this.
artifact() {
    echo "$OUTPUT/${IMAGE_ID}_${IMAGE_VERSION}$1"
}

# Prints template file $1 with every @NAME@ replaced by the value of the shell variable NAME.
fill_template() {
    local line name
    while IFS= read -r line || [ -n "$line" ]; do
        while [[ $line =~ @([A-Z_]+)@ ]]; do
            name=${BASH_REMATCH[1]}
            if [ -z "${!name+set}" ]; then
                echo "$1: @$name@ has no value (set $name)" >&2
                return 1
            fi
            line=${line//@"$name"@/${!name}}
        done
        printf '%s\n' "$line"
    done < "$1"
}

# Formats 32 hex digits as a UUID (8-4-4-4-12), the way systemd derives partition UUIDs
# from a verity root hash.
hex_to_uuid() {
    local h=$1
    echo "${h:0:8}-${h:8:4}-${h:12:4}-${h:16:4}-${h:20:12}"
}
