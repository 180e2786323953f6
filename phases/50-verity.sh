#!/usr/bin/env bash
# Seals the rootfs: a compressed read-only image (squashfs or erofs) and its dm-verity hash
# tree. Salt and UUIDs come from the image id and version, so equal inputs give equal bytes.
# Tools: veritysetup mkfs.erofs?
# Inputs: IMAGE_ID IMAGE_VERSION ROOT_FORMAT ROOT_COMPRESSION ROOT_ZSTD_LEVEL
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

img=$(artifact ".root.$ROOT_FORMAT")
verity=$(artifact .root.verity)
rm -f "$img" "$verity"

seed=$(printf '%s %s' "$IMAGE_ID" "$IMAGE_VERSION" | sha256sum | cut -c1-64)
case "$ROOT_FORMAT" in
    squashfs)
        # The runner's squashfs writer keeps the last image's compressed blocks in the block
        # cache, so after a small change only the changed blocks are compressed again; the image
        # is the same as without the cache. SOURCE_DATE_EPOCH sets every timestamp. To use
        # squashfs-tools instead (same tree, other block layout):
        #   mksquashfs "$ROOTFS" "$img" -noappend -comp lz4 -Xhc -e boot/loisto-initrd.img
        # (zstd: -comp zstd -Xcompression-level "$ROOT_ZSTD_LEVEL").
        case "$ROOT_COMPRESSION" in
            zstd|lz4hc) ;;
            *) echo "ROOT_COMPRESSION=$ROOT_COMPRESSION (image.conf) is not supported; use zstd or lz4hc" >&2; exit 1 ;;
        esac
        "$LOISTO_IMAGE" squashfs "$ROOTFS" "$img" --compression "$ROOT_COMPRESSION" --level "$ROOT_ZSTD_LEVEL" \
            --exclude boot/loisto-initrd.img --block-cache "$CACHE_DIR/squashfs-blocks"
        ;;
    erofs)
        command -v mkfs.erofs >/dev/null || { echo "ROOT_FORMAT=erofs needs mkfs.erofs (erofs-utils)" >&2; exit 1; }
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
