#!/usr/bin/env bash
# Assembles the flashable GPT disk offline with systemd-repart from repart.d/build/, then
# writes SHA256SUMS for every artifact.
# Tools: systemd-repart mkfs.vfat mcopy mkfs.ext4 sfdisk sha256sum
# Inputs: IMAGE_ID IMAGE_VERSION BOOT_SIZE ROOT_SIZE ROOT_VERITY_SIZE VAR_SIZE repart.d/build/
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

roothash=$(cat "$(artifact .roothash)")
# Values for the @...@ fields in repart.d/build/*.conf.
UKI=$(artifact .efi)
ROOT_IMAGE=$(artifact ".root.$ROOT_FORMAT")
ROOT_VERITY=$(artifact .root.verity)
# systemd finds the verity partitions by these: the root hash's two halves.
ROOT_UUID=$(hex_to_uuid "${roothash:0:32}")
ROOT_VERITY_UUID=$(hex_to_uuid "${roothash:32:32}")
export UKI ROOT_IMAGE ROOT_VERITY ROOT_UUID ROOT_VERITY_UUID

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
mv "$disk.tmp" "$disk"
sfdisk --dump "$disk"

cd "$OUTPUT"
sha256sum -- "${IMAGE_ID}_${IMAGE_VERSION}".* > SHA256SUMS
cat SHA256SUMS
