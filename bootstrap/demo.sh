#!/usr/bin/env bash
# The lab demo (README's main command). Grows with the lab: today it installs what it needs,
# builds vixen, validates the example repo and renders every node's machine config.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/deps.sh
cargo build --release --locked -p vixen
VIXEN="$CARGO_TARGET_DIR/release/vixen"
export SOPS_AGE_KEY_FILE="$PWD/examples/homelab/demo.agekey"   # LAB ONLY key
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$VIXEN" validate examples/homelab
"$VIXEN" render examples/homelab --all --out "$work/configs"
ls -l "$work/configs"
