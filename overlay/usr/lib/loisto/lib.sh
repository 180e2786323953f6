# Shared by the loisto-* device services: console lines, the booted slot, update state.
# shellcheck shell=sh

# shellcheck disable=SC2034 # both are used by the scripts that source this file
# State that outlives updates and rollbacks: /var is shared by both slots.
UPDATE_STATE=/var/lib/loisto/update
# Marks this boot healthy; the USB updater installs nothing before it exists.
# shellcheck disable=SC2034
HEALTHY_FLAG=/run/loisto/healthy
# What loisto-boot-entries found this boot: "order=1A0A,0001" and one "A=1A0A" per slot.
BOOT_ENTRIES=/run/loisto/boot-entries

# One line on the console (tests and fleet tooling match on "LOISTO-<TAG> ...") and in the journal.
say() {
    tag=$1
    shift
    echo "LOISTO-$tag $*"
    logger -t "loisto-$(echo "$tag" | tr '[:upper:]' '[:lower:]')" -- "$*" 2>/dev/null || true
}

# The three units that took longest to start, as "a.service:1.2s,b.mount:0.9s": what
# `systemd-analyze blame` shows, which refuses to answer before the boot has finished. It asks
# systemd about every unit (~0.6 s under emulation, idle), so the health report asks after
# its health line.
slowest_units() {
    systemctl show --property=Id,InactiveExitTimestampMonotonic,ActiveEnterTimestampMonotonic '*.service' '*.mount' |
        awk -F= '
            $1 == "Id" { id = $2 }
            $1 == "InactiveExitTimestampMonotonic" { from = $2 }
            $1 == "ActiveEnterTimestampMonotonic" { if ($2 > from && from > 0) printf "%d %s\n", $2 - from, id }' |
        sort -rn | head -n 3 | awk '{printf "%s%s:%.1fs", sep, $2, $1 / 1e6; sep = ","}'
}

# Where this boot's time went, from systemd's own timestamps (microseconds since the kernel
# started; the firmware's and loader's, which only a loader that records them gives, count
# back from there) and the initrd's (its uptime when it started and when it handed over, in
# /run/loisto/initrd-uptime: systemd knows only a systemd initrd's), up to uptime $1 (the
# health line), and the slowest units ($2, from slowest_units):
#   firmware=- loader=- kernel=2.3s initrd=3.0s userspace=4.4s uptime=9.7s slowest=a.service:1.2s,...
boot_report() {
    now=$1
    systemctl show --property=FirmwareTimestampMonotonic,LoaderTimestampMonotonic,InitRDTimestampMonotonic,UserspaceTimestampMonotonic |
        awk -F= -v now="$now" -v slowest="${2:-none}" -v initrd="$(cat /run/loisto/initrd-uptime 2>/dev/null)" '
            function s(x) { return x > 0 ? sprintf("%.1fs", x) : "-" }
            { t[$1] = $2 / 1e6 }
            END {
                fw = t["FirmwareTimestampMonotonic"]; ld = t["LoaderTimestampMonotonic"]
                rd = t["InitRDTimestampMonotonic"]; us = t["UserspaceTimestampMonotonic"]
                if (rd == 0 && split(initrd, ours, " ") == 2) rd = ours[1]
                printf "firmware=%s loader=%s kernel=%s initrd=%s userspace=%s uptime=%.1fs slowest=%s\n",
                    s(fw - ld), s(ld), s(rd > 0 ? rd : us), s(rd > 0 ? us - rd : 0), s(now - us), now, slowest
            }'
}

# The slot this boot came from: rauc.slot= on the UKI's command line (A or B).
booted_slot() {
    read -r cmdline < /proc/cmdline
    for word in $cmdline; do
        case "$word" in rauc.slot=*) echo "${word#rauc.slot=}"; return 0 ;; esac
    done
    echo "?"
}

# What the firmware says of UEFI Secure Boot: on (enforced), off, setup (no PK enrolled: the
# firmware takes any key) or none (no UEFI variables). Each variable is 4 attribute bytes and
# a one-byte value.
secure_boot_state() {
    vars=/sys/firmware/efi/efivars
    guid=8be4df61-93ca-11d2-aa0d-00e098032b8c
    [ -r "$vars/SecureBoot-$guid" ] || { echo none; return 0; }
    if [ "$(od -An -tu1 -j4 -N1 "$vars/SetupMode-$guid" 2>/dev/null | tr -d ' ')" = 1 ]; then
        echo setup
    elif [ "$(od -An -tu1 -j4 -N1 "$vars/SecureBoot-$guid" | tr -d ' ')" = 1 ]; then
        echo on
    else
        echo off
    fi
}

other_slot() {
    case "$1" in A) echo B ;; B) echo A ;; *) echo "?" ;; esac
}

# RAUC's view of every slot, as shell variables (RAUC_SLOTS, RAUC_SLOT_BOOTNAME_<n>, ...).
rauc_slots() {
    rauc status --detailed --output-format=shell 2>/dev/null
}

# Replaces file $1 with standard input so that it survives a power cut right after: the data
# and the rename both reach the disk before this returns.
commit() {
    cat > "$1.new"
    sync "$1.new"
    mv "$1.new" "$1"
    sync "$(dirname "$1")"
}

# "A=good:0.2.0 B=bad:0.3.0": boot status and installed bundle version of each bootable slot,
# sorted by bootname ("factory" for a slot no bundle has written).
slots_summary() {
    (
        eval "$(rauc_slots)" || { echo "unknown"; exit 0; }
        for i in $RAUC_SLOTS; do
            eval "name=\${RAUC_SLOT_BOOTNAME_$i:-} status=\${RAUC_SLOT_BOOT_STATUS_$i:-} version=\${RAUC_SLOT_STATUS_BUNDLE_VERSION_$i:-}"
            # shellcheck disable=SC2154
            [ -n "$name" ] && echo "$name=${status:-unknown}:${version:-factory}"
        done | sort | tr '\n' ' ' | sed 's/ $//'
    )
}

# True when slot $1's boot entry was in BootOrder when loisto-boot-entries read the firmware's
# variables this boot: what RAUC's efi backend calls a good slot, known without starting RAUC.
in_boot_order_at_boot() {
    [ -r "$BOOT_ENTRIES" ] || return 1
    awk -v slot="$1" -F= '
        $1 == "order" { n = split($2, order, ",") }
        $1 == slot { entry = $2 }
        END { for (i = 1; i <= n; i++) if (entry != "" && order[i] == entry) exit 0; exit 1 }' "$BOOT_ENTRIES"
}

# "good", "bad" or "unknown" for slot bootname $2 in $1 (what slots_summary printed): read
# once and passed around, since every `rauc status` makes the daemon read the firmware's
# boot entries again.
slot_status_in() {
    status=$(printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=\([a-z]*\):.*/\1/p")
    echo "${status:-unknown}"
}

# Writes an update record (KEY=VALUE arguments, one per line) to file $1, power-cut safe.
write_record() {
    file=$1
    shift
    printf '%s\n' "$@" | commit "$file"
}

# Reads KEY=VALUE lines of an update record into shell variables prefixed with $2.
read_record() {
    [ -f "$1" ] || return 1
    # shellcheck disable=SC2034 # read through eval
    while IFS='=' read -r key value; do
        case "$key" in
            slot|version|sha256|bundle|result) eval "$2$key=\$value" ;;
        esac
    done < "$1"
}
