#!/usr/bin/env bash
# Opens a shell (or runs a command) in the last build's rootfs: a thin wrapper over
# `loisto-image chroot`. Example: ./enter-chroot.sh -- dpkg -l
set -euo pipefail
cd "$(dirname "$0")"
# A project uses the installed loisto-image; loisto-image's own repository, its checkout.
bin=loisto-image
[ ! -f Cargo.toml ] || { cargo build --release -q && bin=target/release/loisto-image; }
exec "$bin" chroot "$@"
