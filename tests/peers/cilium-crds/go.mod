// Cilium's CRD manifests for LB-IPAM pools and L2 announcement policies (pinned 1.18.x).
module vixen.dev/tests/peers/cilium-crds

go 1.25.0

require github.com/cilium/cilium v1.18.11
