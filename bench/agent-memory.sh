#!/usr/bin/env bash
# Idle agent memory, CPU per poll and webhook latency (README, Performance) on the binary the
# container image ships: static musl, OpenSSL built from source (`--features vendored-openssl`),
# release profile, without the lab (`--no-default-features`), as the Containerfile builds it.
# Builds that binary on Debian (musl-tools and rustup's musl target, added when missing), then
# runs the daemon test against it; the test prints the BENCH lines. `VIXEN_BIN=FILE bench/agent-memory.sh` measures another build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export VIXEN_SKIP_PEERS=1 # the daemon test needs no upstream peer
source tests/deps.sh
target=x86_64-unknown-linux-musl
if [ -z "${VIXEN_BIN:-}" ]; then
  if ! command -v musl-gcc >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq musl-tools >/dev/null
  fi
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked -p vixen --target "$target" --no-default-features --features vendored-openssl
  export VIXEN_BIN="$CARGO_TARGET_DIR/$target/release/vixen"
fi
if ldd "$VIXEN_BIN" 2>/dev/null | grep -q '=>'; then echo "note: $VIXEN_BIN is dynamically linked" >&2; fi
ls -l "$VIXEN_BIN" >&2
cargo test --locked -p vixen --test daemon -- --nocapture 2>&1 | grep -E '^BENCH|^test result'
