#!/usr/bin/env bash
# Chaos bench (issue 14, item 8): N random seeds of agent/tests/chaos.rs (random Git changes with
# node down/up, slow reboots and agent SIGKILLs; etcd write probe, lab.json sampler, invariants).
# Prints every seed, the figures and any invariant violation; exits non-zero on a violation.
# Usage: bench/chaos.sh N          (N random seeds)
#        bench/chaos.sh 1,2,3      (these seeds)
set -euo pipefail
cd "$(dirname "$0")/.."
arg="${1:-5}"
source tests/deps.sh >/dev/null
if [[ "$arg" =~ ^[0-9]+$ ]]; then seeds="random:$arg"; else seeds="$arg"; fi
VIXEN_CHAOS_SEEDS="$seeds" cargo test -q -p vixen --test chaos -- --ignored --exact chaos_seeds \
  --nocapture 2>&1 | grep -E '^(chaos|  |test result|thread|    )'
