#!/usr/bin/env bash
# Builds one Unified Kernel Image per slot: kernel, initrd, os-release and a command line that
# pins the verity root hash, so the UKI (signed, if keys exist) vouches for the whole OS.
# Each slot's UKI names its own partitions by label and says which slot it is (rauc.slot=),
# because an update writes partition contents, never their UUIDs, and RAUC 1.8 learns the
# booted slot only from the command line.
# Tools: ukify /usr/bin/python3 sbsign? faketime
# Inputs: ROOT_FORMAT KERNEL_CMDLINE keys/secureboot.key keys/secureboot.crt
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

roothash=$(cat "$(artifact .roothash)")

# Debian keeps ukify outside PATH.
ukify=$(command -v ukify) || for ukify in /usr/lib/systemd/ukify /lib/systemd/ukify ""; do
    [ -x "$ukify" ] && break
done
[ -n "$ukify" ] || { echo "ukify not found (systemd >= 254; Debian 12: systemd from bookworm-backports)" >&2; exit 1; }

sign=no
if [ -f "$PROJECT_DIR/keys/secureboot.key" ] && [ -f "$PROJECT_DIR/keys/secureboot.crt" ]; then
    sign=yes
fi

for slot in a b; do
    # Corruption panics the kernel (and panic=N reboots it) instead of serving bad data, as
    # any failure in the initrd does (phases/initrd/init), so a bad trial boot ends on the
    # last good slot.
    cmdline="roothash=$roothash systemd.verity_root_data=PARTLABEL=root-$slot"
    cmdline+=" systemd.verity_root_hash=PARTLABEL=root-$slot-verity"
    cmdline+=" systemd.verity_root_options=panic-on-corruption"
    cmdline+=" root=/dev/mapper/root rootfstype=$ROOT_FORMAT ro rauc.slot=${slot^^}"
    cmdline+=" $KERNEL_CMDLINE"

    uki=$(artifact ".slot-$slot.efi")
    rm -f "$uki" "$uki.unsigned"
    # Debian's ukify needs python3-pefile, which only the system python has.
    /usr/bin/python3 "$ukify" build \
        --linux="$(rootfs_kernel)" \
        --initrd="$ROOTFS/boot/loisto-initrd.img" \
        --os-release="@$ROOTFS/usr/lib/os-release" \
        --uname="$(rootfs_kernel_version)" \
        --cmdline="$cmdline" \
        --output="$uki.unsigned"

    if [ "$sign" = yes ]; then
        # sbsign writes the signing time into the signature: a clock stopped at SOURCE_DATE_EPOCH
        # makes the signed UKI reproducible, and equal to what `loisto-image sign` makes offline.
        faketime -f "$(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%d %H:%M:%S')" \
            sbsign --key "$PROJECT_DIR/keys/secureboot.key" --cert "$PROJECT_DIR/keys/secureboot.crt" \
            --output "$uki" "$uki.unsigned"
        rm "$uki.unsigned"
    else
        mv "$uki.unsigned" "$uki"
    fi
    # The ESP copy keeps this mtime: pin it for a reproducible disk.
    touch -d "@$SOURCE_DATE_EPOCH" "$uki"
    echo "slot ${slot^^} cmdline: $cmdline"
done
if [ "$sign" = yes ]; then
    echo "signed with keys/secureboot.crt"
else
    echo "not signed: keys/secureboot.{key,crt} do not exist (run 'loisto-image keys')"
fi
