#!/usr/bin/env bash
# Builds vixen's test peers (upstream Go programs the tests check vixen against; the product
# stays pure Rust): Talos' config validator, Talos' API client (talosctl's library) and its
# compiled protos (per Talos version), kube-apiserver, Cilium's CRD manifests, Flux's
# source-controller and kustomize-controller (with their CRDs), and Argo CD's install manifests.
# Each peer is a Go module of its own under tests/peers/ with pinned versions.
#
# Idempotent and fast when cached: the Go module and build caches live outside the clone
# (VIXEN_PEERS_DIR, default /work/go or ~/.cache/vixen/go), and `go build` does not relink a
# binary that is up to date. Prints where the binaries are (the last line: VIXEN_PEERS_BIN=...).
#
#   VIXEN_PEERS_DIR   root of mod/ (GOMODCACHE), cache/ (GOCACHE), bin/ and share/
#   VIXEN_PEERS_JOBS  parallel compile jobs (go build -p), default 2
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${VIXEN_PEERS_DIR:-}" ]; then
  if [ -d /work ] && [ -w /work ]; then VIXEN_PEERS_DIR=/work/go; else VIXEN_PEERS_DIR="$HOME/.cache/vixen/go"; fi
fi
command -v go >/dev/null || { echo "tests/peers/build.sh: the go command is required (Go >= 1.25)" >&2; exit 1; }

export GOMODCACHE="$VIXEN_PEERS_DIR/mod" GOCACHE="$VIXEN_PEERS_DIR/cache"
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
bin="$VIXEN_PEERS_DIR/bin"
share="$VIXEN_PEERS_DIR/share"
mkdir -p "$bin" "$share"
jobs="${VIXEN_PEERS_JOBS:-2}"

build() { # NAME DIR PACKAGE [go build flags...]
  local name=$1 dir=$2 pkg=$3; shift 3
  local start=$SECONDS
  (cd "$dir" && go build -p "$jobs" "$@" -o "$bin/$name" "$pkg")
  echo "peers: $name built in $((SECONDS - start)) s" >&2
}

build talos-validate talos-validate .
build talos-client talos-client .
# The same dumper against two pinned pkg/machinery versions (go.mod and go.v1.11.mod).
build talos-protos-v1.13 talos-protos .
build talos-protos-v1.11 talos-protos . -modfile=go.v1.11.mod
build cilium-crds cilium-crds .
"$bin/cilium-crds" -out "$share/cilium-crds" >/dev/null
# The version stamp upstream's Makefile sets, so the API server reports v1.34.x (not v0.0.0).
kver=$(cd kube-apiserver && go list -m -f '{{.Version}}' k8s.io/kubernetes)
kminor=$(echo "$kver" | cut -d. -f2)
vpkg=k8s.io/component-base/version
build kube-apiserver kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver \
  -ldflags="-s -w -X $vpkg.gitVersion=$kver -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$kminor -X $vpkg.gitTreeState=clean"

# Flux's controllers (run by the handover test as local processes) and their CRDs, taken from
# the module sources the builds downloaded.
build flux-source-controller flux-source github.com/fluxcd/source-controller
build flux-kustomize-controller flux-kustomize github.com/fluxcd/kustomize-controller
rm -rf "$share/flux-crds" && mkdir -p "$share/flux-crds"
for m in source-controller kustomize-controller; do
  dir=$(cd flux-${m%-controller} && go list -m -f '{{.Dir}}' "github.com/fluxcd/$m")
  cp "$dir"/config/crd/bases/*.yaml "$share/flux-crds/"
done
fluxver=$(cd flux-source && go list -m -f '{{.Version}}' github.com/fluxcd/source-controller)
kustver=$(cd flux-kustomize && go list -m -f '{{.Version}}' github.com/fluxcd/kustomize-controller)
chmod -R u+w "$share/flux-crds"
echo "source-controller $fluxver, kustomize-controller $kustver" > "$share/flux-crds/VERSION"
# Argo CD's install manifests (Argo CD is not built: the test checks what vixen applies).
# v3.6.x needs Go 1.27 (refused on go1.26.8); v3.5.8 is the newest that downloads here.
argover=$(cat argocd/VERSION)
argodir=$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json "github.com/argoproj/argo-cd/v3@$argover" \
  | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -n "$argodir" ] || { echo "tests/peers/build.sh: argo-cd $argover did not download" >&2; exit 1; }
rm -rf "$share/argocd" && mkdir -p "$share/argocd"
cp "$argodir/manifests/install.yaml" "$share/argocd/install.yaml"
chmod u+w "$share/argocd/install.yaml"
echo "$argover" > "$share/argocd/VERSION"

echo "peers: talos-validate  $bin/talos-validate ($(cd talos-validate && go list -m -f '{{.Version}}' github.com/siderolabs/talos/pkg/machinery))"
echo "peers: talos-client    $bin/talos-client ($(cd talos-client && go list -m -f '{{.Version}}' github.com/siderolabs/talos/pkg/machinery))"
echo "peers: talos-protos    $bin/talos-protos-v1.11 ($("$bin/talos-protos-v1.11" -version)), $bin/talos-protos-v1.13 ($("$bin/talos-protos-v1.13" -version))"
echo "peers: kube-apiserver  $bin/kube-apiserver ($kver)"
echo "peers: cilium CRDs     $share/cilium-crds ($(cat "$share/cilium-crds/VERSION"))"
echo "peers: flux            $bin/flux-source-controller, $bin/flux-kustomize-controller ($(cat "$share/flux-crds/VERSION"))"
echo "peers: argo-cd         $share/argocd/install.yaml ($argover)"
echo "VIXEN_PEERS_BIN=$bin"
