#!/usr/bin/env bash
# Seals the rootfs: a compressed read-only image (squashfs or erofs) and its dm-verity hash
# tree. Salt and UUIDs come from the image id and version, so equal inputs give equal bytes.
# Tools: veritysetup mksquashfs|mkfs.erofs
# Inputs: IMAGE_ID IMAGE_VERSION ROOT_FORMAT ROOT_ZSTD_LEVEL
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

img=$(artifact ".root.$ROOT_FORMAT")
verity=$(artifact .root.verity)
rm -f "$img" "$verity"

seed=$(printf '%s %s' "$IMAGE_ID" "$IMAGE_VERSION" | sha256sum | cut -c1-64)
case "$ROOT_FORMAT" in
    squashfs)
        # mksquashfs takes SOURCE_DATE_EPOCH from the environment for every timestamp.
        mksquashfs "$ROOTFS" "$img" -noappend -comp zstd -Xcompression-level "$ROOT_ZSTD_LEVEL" -quiet \
            -e boot/loisto-initrd.img
        ;;
    erofs)
        mkfs.erofs -zlz4hc -T "$SOURCE_DATE_EPOCH" -U "$(hex_to_uuid "${seed:0:32}")" \
            --exclude-path=boot/loisto-initrd.img "$img" "$ROOTFS"
        ;;
    *)
        echo "ROOT_FORMAT=$ROOT_FORMAT is not supported; use squashfs or erofs" >&2
        exit 1
        ;;
esac

veritysetup format "$img" "$verity" \
    --salt="$seed" --uuid="$(hex_to_uuid "${seed:32:32}")" \
    --root-hash-file="$(artifact .roothash)"
echo "root hash: $(cat "$(artifact .roothash)")"
ls -l "$img" "$verity"
