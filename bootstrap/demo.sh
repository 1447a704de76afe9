#!/usr/bin/env bash
# The lab demo (the README's main command), on loopback only:
#   1. start 5 simulated Talos nodes (real etcd on each control plane) from examples/homelab,
#      every node in maintenance mode;
#   2. `vixen bootstrap` the first control plane from its maintenance address;
#   3. `vixen agent` on a Git copy of the example until all 5 nodes are configured and etcd has
#      3 members;
#   4. commit a Talos version bump and let the agent roll it out, one node at a time;
#   5. print the final status table, then clean up everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/deps.sh
# VIXEN_DEMO_PROFILE=dev reuses the test build (CI runs the demo that way, after the tests).
if [ "${VIXEN_DEMO_PROFILE:-release}" = dev ]; then
  echo "== building vixen (dev)"
  cargo build --locked -p vixen
  VIXEN="$CARGO_TARGET_DIR/debug/vixen"
else
  echo "== building vixen (release)"
  cargo build --release --locked -p vixen
  VIXEN="$CARGO_TARGET_DIR/release/vixen"
fi
export SOPS_AGE_KEY_FILE="$PWD/examples/homelab/demo.agekey"   # LAB ONLY key, public
export VIXEN_LOG="${VIXEN_LOG:-warn}"
REBOOT_MS="${REBOOT_MS:-500}"

work=$(mktemp -d)
lab="$work/lab"
cleanup() {
  "$VIXEN" lab down --dir "$lab" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
start=$(date +%s.%N)
stamp() { printf '[%5.1fs] %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$*"; }

stamp "the cluster repo: a Git copy of examples/homelab"
git init -q -b main "$work/origin"
cp -r examples/homelab/. "$work/origin/"
# The demo keeps the stabilization wait short; a real cluster keeps its 30s.
sed -i 's/stabilization: 30s/stabilization: 1s/' "$work/origin/cluster.yaml"
git -C "$work/origin" add -A
git -C "$work/origin" -c user.name=demo -c user.email=demo@vixen.invalid commit -qm "homelab cluster"
git clone -q "$work/origin" "$work/checkout"

"$VIXEN" validate "$work/checkout"
# With the kube-apiserver peer built (tests/deps.sh builds it), the lab runs a real Kubernetes API
# on its etcd, and the rollout drains each Node and waits for it Ready before the next.
kube=()
if [ -x "${VIXEN_PEERS_BIN:-/nonexistent}/kube-apiserver" ]; then kube=(--kube); fi
stamp "starting the lab: 5 nodes in maintenance mode${kube:+, and a kube-apiserver once etcd runs}"
"$VIXEN" lab up --repo "$work/checkout" --dir "$lab" --reboot-ms "$REBOOT_MS" "${kube[@]}"
"$VIXEN" lab status --dir "$lab"

stamp "vixen bootstrap: cp-1 from its maintenance address"
"$VIXEN" bootstrap --repo "$work/checkout" --lab "$lab" --out "$work/out" --timeout 120

stamp "vixen agent: joins cp-2, cp-3 (one at a time) and the workers"
"$VIXEN" plan --repo "$work/checkout" --lab "$lab"
"$VIXEN" agent --once --repo "$work/checkout" --lab "$lab" --ready-timeout 120
stamp "etcd, asked directly:"
ETCDCTL_API=3 etcdctl --endpoints http://127.0.10.1:2379 member list -w table

stamp "git push: Talos v1.11.6 -> v1.12.2"
sed -i 's/version: v1.11.6/version: v1.12.2/' "$work/origin/cluster.yaml"
git -C "$work/origin" -c user.name=demo -c user.email=demo@vixen.invalid commit -qam "Upgrade Talos to v1.12.2"
git -C "$work/checkout" pull -q --ff-only
"$VIXEN" plan --repo "$work/checkout" --lab "$lab"
stamp "vixen agent: rolling upgrade, control planes first (etcd leader last), then workers"
"$VIXEN" agent --once --repo "$work/checkout" --lab "$lab" --ready-timeout 120
stamp "upgrade order, from the lab's call journal:"
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    c = json.loads(line)
    if c["method"].endswith(("/Upgrade", "/EtcdForfeitLeadership")):
        print("   ", c["node"], c["method"].rsplit("/", 1)[1], c["result"])
' "$lab/calls.jsonl"
stamp "final status"
"$VIXEN" lab status --dir "$lab"
