#!/usr/bin/env bash
# Boots the last build's image in QEMU: a thin wrapper over `loisto-image vm`.
# Any arguments are passed on, e.g. ./test-vm.sh --headless --memory 2G
set -euo pipefail
cd "$(dirname "$0")"
bin=target/release/loisto-image
[ -x "$bin" ] || cargo build --release -q
exec "$bin" vm "$@"
