#!/usr/bin/env bash
# Turns the base system into an appliance: identity in os-release, units enabled and
# masked, no login passwords, and what a read-only root needs.
# Tools: systemctl
# Inputs: IMAGE_ID IMAGE_VERSION HEALTH_UNITS
set -euo pipefail
source "$PROJECT_DIR/phases/lib/common.sh"

# IMAGE_ID and IMAGE_VERSION identify the build (systemd, RAUC and sysext all read them).
osr="$ROOTFS/usr/lib/os-release"
sed -i -e '/^IMAGE_ID=/d' -e '/^IMAGE_VERSION=/d' "$(readlink -f "$osr")"
printf 'IMAGE_ID=%s\nIMAGE_VERSION=%s\n' "$IMAGE_ID" "$IMAGE_VERSION" >> "$(readlink -f "$osr")"

echo "$IMAGE_ID" > "$ROOTFS/etc/hostname"
# Empty machine-id: systemd generates one per boot on a read-only root.
: > "$ROOTFS/etc/machine-id"
# Nothing of the build host stays in the image: mmdebstrap and arch-chroot leave the host's
# resolv.conf behind (its nameservers), and mmdebstrap its apt options. The device's resolver
# writes into /run (systemd-resolved's stub file).
rm -f "$ROOTFS/etc/resolv.conf" "$ROOTFS/etc/apt/apt.conf.d/99mmdebstrap"
ln -s ../run/systemd/resolve/stub-resolv.conf "$ROOTFS/etc/resolv.conf"

# Boot entries for both slots, /data's layout, and the health check that marks a slot good
# (or rolls an update back); the units it requires are listed for it.
systemctl --root="$ROOTFS" enable loisto-boot-entries.service loisto-data.service loisto-health.service
printf '%s\n' "# Units that must be active for a boot to count as healthy (HEALTH_UNITS)." \
    "${HEALTH_UNITS[@]}" > "$ROOTFS/usr/lib/loisto/health-units"
# The check starts once those units have started, not after all of multi-user.target.
health_dropin="$ROOTFS/usr/lib/systemd/system/loisto-health.service.d/health-units.conf"
mkdir -p "${health_dropin%/*}"
rm -f "$health_dropin"
if [ ${#HEALTH_UNITS[@]} -gt 0 ]; then
    printf '%s\n' "# Written by phases/30-configure.sh from HEALTH_UNITS." "[Unit]" \
        "After=${HEALTH_UNITS[*]}" > "$health_dropin"
fi
# The mount point of the user's partition, on the read-only root.
mkdir -p "$ROOTFS/data"
# An appliance has no interactive escape hatches: a shell on the console is a way past verity
# and the health check. The overlay's emergency.service reports and reboots instead.
# No login on the serial console either (it would also print its prompt into the console
# lines the device reports on).
systemctl --root="$ROOTFS" mask ctrl-alt-del.target rescue.service \
    console-getty.service getty@tty2.service serial-getty@.service
# Nothing to do on a read-only root, or nothing an appliance uses: package updates and the
# dpkg database backup (the packages come with the image), ext4 scrubbing (it needs LVM),
# dracut's copy of the initrd for shutdown (the image does not hold the initrd file), login
# records in utmp/wtmp (nobody logs in; the boot waited ~0.2 s for them under emulation),
# and logind's early load of the drm module (a GPU's driver loads it when udev finds the GPU;
# without a GPU it was 1.9 s of CPU under QEMU -icount, 1 s off the health line).
systemctl --root="$ROOTFS" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service dpkg-db-backup.timer dracut-shutdown.service \
    systemd-update-utmp.service systemd-update-utmp-runlevel.service modprobe@drm.service \
    2>/dev/null || true
# Kernel file systems for debugging, tracing, huge pages, FUSE and configfs (USB gadgets):
# nothing in an appliance mounts on them, debugfs and tracefs are ways into the kernel it
# should not offer, and each of the seven units (two of them module loads) is a job of the
# CPU-bound boot (0.4-0.9 s each in `systemd-analyze blame` under emulation; masking them
# changed the health line by less than the noise). `systemctl unmask` one to get it back.
systemctl --root="$ROOTFS" mask sys-kernel-debug.mount sys-kernel-tracing.mount \
    dev-hugepages.mount sys-fs-fuse-connections.mount sys-kernel-config.mount \
    modprobe@fuse.service modprobe@configfs.service
# Early-boot jobs that stood between PID 1 and sysinit.target (and so the health report),
# for what an appliance does not do: device nodes for modules not loaded yet (the modules
# make their nodes when they load: loop, which RAUC needs, is loaded at every boot), the
# permissions of those nodes, a remount of the read-only root the initrd mounted as it
# should be, dm_mod (the initrd loaded it for verity), POSIX message queues and binfmt_misc
# (running foreign binaries). sysinit.target came 0.7 s sooner under emulation.
systemctl --root="$ROOTFS" mask kmod-static-nodes.service systemd-tmpfiles-setup-dev.service \
    systemd-remount-fs.service modprobe@dm_mod.service dev-mqueue.mount \
    proc-sys-fs-binfmt_misc.automount
# Debian's modules-load.d file is only comments, but its presence starts
# systemd-modules-load.service at every boot; a module list from the overlay starts it again.
rm -f "$ROOTFS/etc/modules-load.d/modules.conf"
# Generators for what an appliance does not have, each one a program run at every boot (~0.1 s
# apiece under emulation): LUKS and dm-integrity volumes, hibernation, SysV init scripts,
# rc.local, offline system updates, serial gettys (masked above), partitions found by GPT
# type (the mounts are spelled out in /etc/fstab), and the verity root, which the initrd has
# opened already (the unit it makes would hold sysinit.target until udev's coldplug reaches
# the root's partitions, ~6 s into userspace under emulation, to find the device open). Kept:
# fstab, debug (systemd.mask= and friends on the kernel command line), run.
mkdir -p "$ROOTFS/etc/systemd/system-generators"
for generator in cryptsetup integritysetup hibernate-resume sysv rc-local system-update getty gpt-auto \
    veritysetup; do
    ln -sfn /dev/null "$ROOTFS/etc/systemd/system-generators/systemd-$generator-generator"
done

# Lock root: nobody logs in with a password.
if [ -f "$ROOTFS/etc/shadow" ]; then
    sed -i -E 's/^root:[^:]*:/root:!:/' "$ROOTFS/etc/shadow"
fi
