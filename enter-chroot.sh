#!/usr/bin/env bash
# Opens a shell (or runs a command) in the last build's rootfs: a thin wrapper over
# `loisto-image chroot`. Example: ./enter-chroot.sh -- dpkg -l
set -euo pipefail
cd "$(dirname "$0")"
bin=target/release/loisto-image
[ -x "$bin" ] || cargo build --release -q
exec "$bin" chroot "$@"
