#!/usr/bin/env bash
# With FLASH_FILES=yes: the disk in the forms people flash, beside the .img: `.img.zst`
# (zstd; its frame header records the size) and `.bmap`, the block map bmaptool reads to
# write only the blocks that hold data:  bmaptool copy NAME.img.zst /dev/sdX
# Inputs: FLASH_FILES
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

case "${FLASH_FILES:-no}" in
    yes) ;;
    no) echo "FLASH_FILES=no: no .img.zst or .bmap this time"; exit 0 ;;
    *) echo "FLASH_FILES=$FLASH_FILES: use yes or no" >&2; exit 1 ;;
esac
# `sign` remakes both the same way after it writes signed UKIs into the disk.
"$LOISTO_IMAGE" flash-files "$(artifact .img)"
