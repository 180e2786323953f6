#!/usr/bin/env bash
# Copies the project's own files into the rootfs: overlay/ verbatim, the first-boot
# partition definitions, and the RAUC config and keyring.
# Inputs: COMPATIBLE BOOT_SIZE ROOT_SIZE ROOT_VERITY_SIZE VAR_SIZE DATA_SIZE overlay/ repart.d/device/ rauc/
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

# Ownership is reset to root: the overlay belongs to the image, not to whoever checked it out.
cp -a --no-preserve=ownership "$PROJECT_DIR/overlay/." "$ROOTFS/"

# systemd-repart on the device reads these at boot to create the B slot and /var.
mkdir -p "$ROOTFS/usr/lib/repart.d"
for def in "$PROJECT_DIR"/repart.d/device/*.conf; do
    fill_template "$def" > "$ROOTFS/usr/lib/repart.d/${def##*/}"
done

mkdir -p "$ROOTFS/etc/rauc"
fill_template "$PROJECT_DIR/rauc/system.conf" > "$ROOTFS/etc/rauc/system.conf"
if [ -f "$PROJECT_DIR/rauc/keyring.pem" ]; then
    cp "$PROJECT_DIR/rauc/keyring.pem" "$ROOTFS/etc/rauc/keyring.pem"
else
    echo "note: rauc/keyring.pem does not exist yet (run 'loisto-image keys'); the image cannot verify bundles"
fi
