//! Container images as the lab's nodes see them: which names resolve, what a pull stores in the
//! node's containerd, and what Talos 1.13+ needs before an upgrade.
//!
//! - A lab rule stands in for DNS: a registry host ending in `.invalid` (RFC 2606) does not
//!   resolve, and a pull fails as containerd fails on an unknown host.
//! - From Talos 1.14 `ghcr.io/siderolabs/installer` is no longer published with releases (the
//!   Image Factory's installer replaces it: v1.14 `hack/release.toml`, "Default Installer
//!   Image"), so `ghcr.io/siderolabs/installer:v1.14.x` and later are not found, as containerd
//!   reports a tag the registry does not have.
//! - `ImageService.Pull` (v1.13 `internal/app/images/images.go`) answers `NotFound "error pulling
//!   image: ..."` when the pull fails, and streams the pulled name with its digest when done.
//! - `LifecycleService.Upgrade` (v1.13 `internal/app/lifecycle/lifecycle.go`, `container.go`)
//!   takes the installer from the containerd store: an image never pulled fails with
//!   `Internal "upgrade failed: installer image \"...\" not found in containerd store: ..."`.

use std::hash::{DefaultHasher, Hash, Hasher};

/// The registry host of an image reference (`docker.io` when the first path part is not a
/// host, as in containerd's reference normalisation).
pub(crate) fn registry(image: &str) -> &str {
    match image.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            host.split(':').next().unwrap_or(host)
        }
        _ => "docker.io",
    }
}

/// Whether the reference resolves; the error is containerd's text for an unknown host.
pub(crate) fn resolve(image: &str) -> Result<(), String> {
    let host = registry(image);
    if image.is_empty() {
        return Err("image reference is empty".into());
    }
    if unpublished(image) {
        return Err(format!(
            "failed to pull image {image:?}: failed to resolve reference {image:?}: {image}: not \
             found"
        ));
    }
    if host.ends_with(".invalid") {
        return Err(format!(
            "failed to pull image {image:?}: failed to resolve reference {image:?}: failed to do \
             request: Head \"https://{host}/v2/\": dial tcp: lookup {host}: no such host"
        ));
    }
    Ok(())
}

/// `ghcr.io/siderolabs/installer` with a tag of Talos 1.14 or later (see the module docs).
fn unpublished(image: &str) -> bool {
    let Some((name, tag)) = image.rsplit_once(':') else {
        return false;
    };
    name == "ghcr.io/siderolabs/installer"
        && vixen_talos::TalosVersion::parse(tag).is_some_and(|v| (v.major, v.minor) >= (1, 14))
}

/// A stable fake digest for a reference (the same name always "pulls" the same content).
pub(crate) fn digest(image: &str) -> String {
    let mut out = String::from("sha256:");
    for salt in 0u8..4 {
        let mut h = DefaultHasher::new();
        (salt, image).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The name a pull reports: the reference without its tag, then `@digest`.
pub(crate) fn pulled_name(image: &str) -> String {
    let base = image.split('@').next().unwrap_or(image);
    let name = match base.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => base,
    };
    format!("{name}@{}", digest(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_registries_do_not_resolve() {
        assert_eq!(registry("ghcr.io/siderolabs/installer:v1.13.0"), "ghcr.io");
        assert_eq!(registry("busybox:1"), "docker.io");
        assert_eq!(registry("reg.invalid:5000/x:v1"), "reg.invalid");
        assert!(resolve("ghcr.io/siderolabs/installer:v1.13.0").is_ok());
        let e = resolve("ghcr.io/siderolabs/installer:v1.14.0").unwrap_err();
        assert!(
            e.ends_with("ghcr.io/siderolabs/installer:v1.14.0: not found"),
            "{e}"
        );
        assert!(resolve("factory.talos.dev/installer/abc:v1.14.0").is_ok());
        let e = resolve("reg.invalid/installer:v1.13.0").unwrap_err();
        assert!(e.contains("lookup reg.invalid: no such host"), "{e}");
        assert!(pulled_name("ghcr.io/a/b:v1").starts_with("ghcr.io/a/b@sha256:"));
    }
}
