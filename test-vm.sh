#!/usr/bin/env bash
# Boots the last build's image in QEMU: a thin wrapper over `loisto-image vm`.
# Any arguments are passed on, e.g. ./test-vm.sh --headless --memory 2G
set -euo pipefail
cd "$(dirname "$0")"
# loisto-image's own repository builds the tool from its checkout; a project uses the installed one.
bin=loisto-image
if [ -f Cargo.toml ]; then
    bin=target/release/loisto-image
    [ -x "$bin" ] || cargo build --release -q
fi
exec "$bin" vm "$@"
