#!/usr/bin/env bash
# Builds the Unified Kernel Image: kernel, initrd, os-release and a command line that pins
# the verity root hash, so the UKI (signed, if keys exist) vouches for the whole OS.
# Tools: ukify /usr/bin/python3 sbsign?
# Inputs: ROOT_FORMAT KERNEL_CMDLINE keys/secureboot.key keys/secureboot.crt
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

roothash=$(cat "$(artifact .roothash)")
# Corruption panics the kernel (and panic=N reboots it) instead of serving bad data.
cmdline="roothash=$roothash systemd.verity_root_options=panic-on-corruption"
cmdline+=" root=/dev/mapper/root rootfstype=$ROOT_FORMAT ro $KERNEL_CMDLINE"

# Debian keeps ukify outside PATH.
ukify=$(command -v ukify) || for ukify in /usr/lib/systemd/ukify /lib/systemd/ukify ""; do
    [ -x "$ukify" ] && break
done
[ -n "$ukify" ] || { echo "ukify not found (systemd >= 254; Debian 12: systemd from bookworm-backports)" >&2; exit 1; }

uki=$(artifact .efi)
rm -f "$uki" "$uki.unsigned"
# Debian's ukify needs python3-pefile, which only the system python has.
/usr/bin/python3 "$ukify" build \
    --linux="$(rootfs_kernel)" \
    --initrd="$ROOTFS/boot/loisto-initrd.img" \
    --os-release="@$ROOTFS/usr/lib/os-release" \
    --uname="$(rootfs_kernel_version)" \
    --cmdline="$cmdline" \
    --output="$uki.unsigned"

if [ -f "$PROJECT_DIR/keys/secureboot.key" ] && [ -f "$PROJECT_DIR/keys/secureboot.crt" ]; then
    sbsign --key "$PROJECT_DIR/keys/secureboot.key" --cert "$PROJECT_DIR/keys/secureboot.crt" \
        --output "$uki" "$uki.unsigned"
    rm "$uki.unsigned"
    echo "signed with keys/secureboot.crt"
else
    mv "$uki.unsigned" "$uki"
    echo "not signed: keys/secureboot.{key,crt} do not exist (run 'loisto-image keys')"
fi
# The ESP copy keeps this mtime: pin it for a reproducible disk.
touch -d "@$SOURCE_DATE_EPOCH" "$uki"
echo "cmdline: $cmdline"
