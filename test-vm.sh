#!/usr/bin/env bash
# Boots the last build's image in QEMU: a thin wrapper over `loisto-image vm`.
# Any arguments are passed on, e.g. ./test-vm.sh --headless --memory 2G
set -euo pipefail
cd "$(dirname "$0")"
# A project uses the installed loisto-image; loisto-image's own repository, its checkout.
bin=loisto-image
[ ! -f Cargo.toml ] || { cargo build --release -q && bin=target/release/loisto-image; }
exec "$bin" vm "$@"
