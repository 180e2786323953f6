#!/usr/bin/env bash
# Turns the base system into an appliance: identity in os-release, units enabled and
# masked, no login passwords, and what a read-only root needs.
# Tools: systemctl
# Inputs: IMAGE_ID IMAGE_VERSION
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

# IMAGE_ID and IMAGE_VERSION identify the build (systemd, RAUC and sysext all read them).
osr="$ROOTFS/usr/lib/os-release"
sed -i -e '/^IMAGE_ID=/d' -e '/^IMAGE_VERSION=/d' "$(readlink -f "$osr")"
printf 'IMAGE_ID=%s\nIMAGE_VERSION=%s\n' "$IMAGE_ID" "$IMAGE_VERSION" >> "$(readlink -f "$osr")"

echo "$IMAGE_ID" > "$ROOTFS/etc/hostname"
# Empty machine-id: systemd generates one per boot on a read-only root.
: > "$ROOTFS/etc/machine-id"

# The health report on the console, once the system is up.
systemctl --root="$ROOTFS" enable loisto-health.service
# An appliance has no interactive escape hatches (research doc, "Lockdown").
systemctl --root="$ROOTFS" mask ctrl-alt-del.target rescue.service emergency.service \
    console-getty.service getty@tty2.service
# Nothing to do on a read-only root: these would only fail.
systemctl --root="$ROOTFS" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer 2>/dev/null || true

# Lock root: nobody logs in with a password.
if [ -f "$ROOTFS/etc/shadow" ]; then
    sed -i -E 's/^root:[^:]*:/root:!:/' "$ROOTFS/etc/shadow"
fi
