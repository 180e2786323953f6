#!/usr/bin/env bash
# Assembles the flashable GPT disk offline with systemd-repart from repart.d/build/.
# (The runner writes SHA256SUMS and manifest.json for every artifact after the last phase.)
# Tools: systemd-repart mkfs.vfat mmd mcopy mkfs.ext4 sfdisk faketime dd
# Inputs: IMAGE_ID IMAGE_VERSION BOOT_SIZE ROOT_SIZE ROOT_VERITY_SIZE VAR_SIZE DATA_SIZE repart.d/build/
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

roothash=$(cat "$(artifact .roothash)")
# Values for the @...@ fields in repart.d/build/*.conf.
ROOT_IMAGE=$(artifact ".root.$ROOT_FORMAT")
ROOT_VERITY=$(artifact .root.verity)
# The root hash's two halves, as systemd derives partition UUIDs from it (the UKIs find the
# partitions by label; the UUIDs keep the disk the systemd convention expects).
ROOT_UUID=$(hex_to_uuid "${roothash:0:32}")
ROOT_VERITY_UUID=$(hex_to_uuid "${roothash:32:32}")
# A stopped clock (faketime -f with an absolute date); without -f faketime only starts the
# clock there and it runs on, so a slow moment put a different second into a FAT timestamp.
frozen_clock=$(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%d %H:%M:%S')

# The boot partition's content, the same for both slots (the disk's boot-a, and what a
# bundle writes into the slot it updates): slot A's UKI where firmware looks by default, slot
# B's beside it; each slot's boot entry names its own. `loisto-image esp` is mkfs.vfat + mtools
# under a clock frozen at SOURCE_DATE_EPOCH (run with -v to see the commands); `sign` remakes
# this image the same way with signed UKIs. Slot B's boot partition starts as an empty FAT.
BOOT_IMAGE=$(artifact .boot.vfat)
"$LOISTO_IMAGE" esp "$BOOT_IMAGE" --size "$BOOT_SIZE" --label BOOT --volume-id "${roothash:0:8}" \
    EFI/BOOT/BOOTX64.EFI="$(artifact .slot-a.efi)" EFI/loisto/slot-b.efi="$(artifact .slot-b.efi)"
BOOT_B_IMAGE="$BUILD_DIR/boot-b.vfat"
"$LOISTO_IMAGE" esp "$BOOT_B_IMAGE" --size "$BOOT_SIZE" --label BOOT --volume-id "${roothash:8:8}"

# /var and /data start empty. They are made here, not by repart, because mkfs picks a random
# hash seed otherwise; UUID and seed from the image identity keep the disk byte-identical.
# (/data in the image, not made on the device: its first boot then costs what every boot does.)
# empty_ext4 LABEL SIZE: the file system image, its path in $BUILD_DIR/LABEL.ext4.
empty_ext4() {
    local img="$BUILD_DIR/$1.ext4" uuid
    uuid=$(hex_to_uuid "$(printf '%s %s %s' "$IMAGE_ID" "$IMAGE_VERSION" "$1" | sha256sum | cut -c1-32)")
    rm -f "$img"
    faketime -f "$frozen_clock" mkfs.ext4 -q -L "$1" -U "$uuid" -E "hash_seed=$uuid" "$img" "$2"
}
empty_ext4 var "$VAR_SIZE"
empty_ext4 data "$DATA_SIZE"

# fill_template reads the @FIELD@ values by name.
export ROOT_IMAGE ROOT_VERITY ROOT_UUID ROOT_VERITY_UUID

defs="$BUILD_DIR/repart.d"
rm -rf "$defs"
mkdir -p "$defs"
for def in "$PROJECT_DIR"/repart.d/build/*.conf; do
    fill_template "$def" > "$defs/${def##*/}"
done

disk=$(artifact .img)
rm -f "$disk" "$disk.tmp"
# The seed fixes the disk and partition UUIDs that are not set explicitly.
seed=$(printf '%s %s %s' "$IMAGE_ID" "$IMAGE_VERSION" "$roothash" | sha256sum | cut -c1-32)
systemd-repart --offline=yes --empty=create --size=auto --dry-run=no \
    --seed="$(hex_to_uuid "$seed")" --definitions="$defs" "$disk.tmp"

# The boot, /var and /data images are mostly zeros (a 128 MiB FAT holding ~45 MiB, empty
# ext4s). repart's CopyBlocks= writes every zero of them, and flushing those ~500 MiB cost
# ~2 s of every rebuild; dd conv=sparse writes only their blocks that are not all zeros into
# the partitions repart left empty, whose unwritten blocks read as zeros: the same bytes.
table=$(sfdisk --dump "$disk.tmp")
# write_into LABEL IMAGE: IMAGE into the partition named LABEL, which it must fit.
write_into() {
    local start sectors bytes
    read -r start sectors < <(printf '%s\n' "$table" |
        sed -n "s/.*start= *\([0-9]*\), size= *\([0-9]*\),.*name=\"$1\".*/\1 \2/p")
    if [ -z "$start" ]; then
        echo "70-disk: no partition named $1 in repart.d/build/ to write $2 into" >&2
        return 1
    fi
    bytes=$(stat -c %s "$2")
    if [ "$bytes" -gt $((sectors * 512)) ]; then
        echo "70-disk: $2 ($bytes bytes) does not fit partition $1 ($((sectors * 512)) bytes)" >&2
        return 1
    fi
    dd if="$2" of="$disk.tmp" bs=64K seek=$((start * 512)) oflag=seek_bytes conv=sparse,notrunc status=none
}
write_into boot-a "$BOOT_IMAGE"
write_into boot-b "$BOOT_B_IMAGE"
write_into var "$BUILD_DIR/var.ext4"
write_into data "$BUILD_DIR/data.ext4"
mv "$disk.tmp" "$disk"
printf '%s\n' "$table"
