//! Where the upstream test peers built by `tests/peers/build.sh` are: Talos' config validator,
//! kube-apiserver and Cilium's CRD manifests. The lab and the tests find them here.
//!
//! Lookup: `$VIXEN_PEERS_BIN`, else `/work/go/bin`, else `~/.cache/vixen/go/bin` (build.sh's
//! defaults). Shared data (the Cilium CRDs) sits in `../share` next to that folder.

use std::path::PathBuf;

/// The folder holding the peer binaries, if one exists.
pub fn bin_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("VIXEN_PEERS_BIN") {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(PathBuf::from("/work/go/bin"));
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/vixen/go/bin"));
    }
    candidates.into_iter().find(|d| d.is_dir())
}

/// A peer binary (`talos-validate`, `kube-apiserver`, `cilium-crds`), if built.
pub fn binary(name: &str) -> Option<PathBuf> {
    bin_dir().map(|d| d.join(name)).filter(|p| p.is_file())
}

/// A folder of shared peer data (`flux-crds`, `argocd`), if build.sh made it.
pub fn share(name: &str) -> Option<PathBuf> {
    let dir = bin_dir()?.parent()?.join("share").join(name);
    dir.join("VERSION").is_file().then_some(dir)
}

/// The folder of Cilium's CRD manifests (`ciliumloadbalancerippools.yaml`...), if extracted.
pub fn cilium_crds() -> Option<PathBuf> {
    let dir = bin_dir()?.parent()?.join("share/cilium-crds");
    dir.join("ciliumloadbalancerippools.yaml")
        .is_file()
        .then_some(dir)
}

/// Whether tests must have the peers: in CI (`CI` set), or after tests/deps.sh built them
/// (`VIXEN_PEERS_REQUIRED`), a missing peer fails the test instead of skipping it.
pub fn required() -> bool {
    ["CI", "VIXEN_PEERS_REQUIRED"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// A peer for a test: `Some(path)`, or `None` after a loud skip message when it is missing
/// outside CI.
///
/// # Panics
/// When the peer is missing and [`required`] (CI).
pub fn for_test(name: &str, test: &str) -> Option<PathBuf> {
    if let Some(p) = binary(name) {
        return Some(p);
    }
    assert!(
        !required(),
        "{test}: test peer `{name}` is missing and CI is set: run tests/peers/build.sh"
    );
    eprintln!(
        "\n!!! SKIPPED {test}: test peer `{name}` not built (bash tests/peers/build.sh); \
         CI must have it !!!\n"
    );
    None
}
