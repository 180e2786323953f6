#!/usr/bin/env bash
# Opens a shell (or runs a command) in the last build's rootfs: a thin wrapper over
# `loisto-image chroot`. Example: ./enter-chroot.sh -- dpkg -l
set -euo pipefail
cd "$(dirname "$0")"
# loisto-image's own repository builds the tool from its checkout; a project uses the installed one.
bin=loisto-image
if [ -f Cargo.toml ]; then
    bin=target/release/loisto-image
    [ -x "$bin" ] || cargo build --release -q
fi
exec "$bin" chroot "$@"
