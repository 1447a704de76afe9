#!/usr/bin/env bash
# Lab rollout benchmark: a 5-node Talos upgrade (v1.11.6 -> v1.12.2) with --reboot-ms 200 and
# stabilization 0s. Prints the wall time, the time spent in gates (waiting for reboots, etcd
# and health) and what vixen adds beyond them, per node. Target (README): < 100 ms per node.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/deps.sh
cargo build --release --locked -p vixen >/dev/null
VIXEN="$CARGO_TARGET_DIR/release/vixen"
export SOPS_AGE_KEY_FILE="$PWD/examples/homelab/demo.agekey"
work=$(mktemp -d); lab="$work/lab"
trap '"$VIXEN" lab down --dir "$lab" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cp -r examples/homelab "$work/repo"
sed -i 's/stabilization: 30s/stabilization: 0s/' "$work/repo/cluster.yaml"
"$VIXEN" lab up --repo "$work/repo" --dir "$lab" --reboot-ms 200 >/dev/null
VIXEN_LOG=warn "$VIXEN" bootstrap --repo "$work/repo" --lab "$lab" --out "$work/out" >/dev/null 2>&1
VIXEN_LOG=warn "$VIXEN" agent --once --repo "$work/repo" --lab "$lab" >/dev/null
sed -i 's/version: v1.11.6/version: v1.12.2/' "$work/repo/cluster.yaml"
start=$(date +%s%N)
VIXEN_LOG=info "$VIXEN" agent --once --repo "$work/repo" --lab "$lab" > /dev/null 2> "$work/log"
end=$(date +%s%N)
python3 - "$work/log" "$start" "$end" <<'PY'
import re, sys
log, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ansi = re.compile(r"\x1b\[[0-9;]*m")
actions, gate_ms, act_ms = {}, 0, 0
for line in open(log):
    line = ansi.sub("", line)
    m = re.search(r"step started node=(\S+) step=(\d+) action=(.*?) reason=", line)
    if m:
        actions[m.group(2)] = m.group(3)
        continue
    m = re.search(r"step done node=(\S+) step=(\d+) elapsed_ms=(\d+)", line)
    if m:
        a, ms = actions.get(m.group(2), ""), int(m.group(3))
        if a.startswith(("wait", "stabilize")):
            gate_ms += ms
        else:
            act_ms += ms
wall = (end - start) / 1e6
print(f"5-node rolling upgrade, --reboot-ms 200, stabilization 0s")
print(f"wall time                    {wall:8.0f} ms  ({wall/5:6.0f} ms per node)")
print(f"in gates (reboot, etcd, health polls)  {gate_ms:8.0f} ms")
print(f"in calls (upgrade, checks, applies)    {act_ms:8.0f} ms")
added = wall - gate_ms
print(f"vixen adds beyond the gates  {added:8.0f} ms  ({added/5:6.0f} ms per node; target < 100 ms)")
PY
