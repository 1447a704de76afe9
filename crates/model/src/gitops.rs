//! `gitops:` in `cluster.yaml`: the handover of the apps to Flux or Argo CD.
//!
//! vixen owns the layer below the apps (OS, etcd, CNI, addons); the app tool owns what it
//! deploys. vixen applies the tool's install manifests (pinned in Git), the objects that point
//! the tool at the apps path, and the age key the tool decrypts SOPS files with:
//!
//! | tool    | objects vixen writes                                            | age key Secret              |
//! |---------|-----------------------------------------------------------------|-----------------------------|
//! | Flux    | GitRepository and Kustomization `flux-system/apps`              | `flux-system/sops-age`, key `age.agekey` |
//! | Argo CD | repository Secret `argocd/vixen-apps-repo`, root Application `argocd/apps` | `argocd/sops-age`, key `keys.txt` |
//!
//! Flux facts (fluxcd/source-controller and kustomize-controller v1.9.6, read for this): the
//! GitRepository URL must match `^(http|https|ssh)://`, intervals `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
//! (`config/crd/bases`); kustomize-controller's SOPS decryptor takes the age identities of the
//! Secret's keys that end in `.agekey` (`internal/decryptor/decryptor.go`). Argo CD facts
//! (argoproj/argo-cd v3.5.8): a repository is a Secret labelled
//! `argocd.argoproj.io/secret-type: repository` with `type` and `url`; `manifests/install.yaml`
//! names no namespace (it is applied with `-n argocd`), so vixen puts its namespaced objects
//! into `argocd`.

use std::path::Path;

use serde_json::{Value, json};

use crate::cni::{ManifestFile, objects};
use crate::path;
use crate::render::{diag, is_sops_patch};
use crate::repo::{Diagnostic, Diagnostics, Repo};
use crate::types::{GitopsSpec, GitopsTool};

/// The name of the objects vixen writes for the handover (Kustomization, Application, ...).
pub const APPS: &str = "apps";
/// The Secret holding the age key for the tool.
pub const SOPS_SECRET: &str = "sops-age";
/// Flux's default interval when `gitops.interval` is not set.
pub const DEFAULT_INTERVAL: &str = "1m";

impl GitopsTool {
    /// The tool's namespace (where its install manifests put it).
    pub fn namespace(self) -> &'static str {
        match self {
            GitopsTool::Flux => "flux-system",
            GitopsTool::Argocd => "argocd",
        }
    }
    /// The key of the age identity in [`SOPS_SECRET`].
    pub fn age_key_name(self) -> &'static str {
        match self {
            GitopsTool::Flux => "age.agekey",
            GitopsTool::Argocd => "keys.txt",
        }
    }
    /// How users name it.
    pub fn title(self) -> &'static str {
        match self {
            GitopsTool::Flux => "Flux",
            GitopsTool::Argocd => "Argo CD",
        }
    }
    /// The CRDs the objects vixen writes need (the install manifests must hold them).
    pub fn crds(self) -> &'static [&'static str] {
        match self {
            GitopsTool::Flux => &[
                "gitrepositories.source.toolkit.fluxcd.io",
                "kustomizations.kustomize.toolkit.fluxcd.io",
            ],
            GitopsTool::Argocd => &["applications.argoproj.io"],
        }
    }
}

/// The files of `gitops.manifests` (none without `gitops:`), read through the sandbox.
///
/// # Errors
/// A [`Diagnostic`] at the entry whose file is refused or cannot be read.
pub fn install_files(repo: &Repo) -> Result<Vec<ManifestFile>, Diagnostic> {
    let c = &repo.cluster;
    let Some(g) = &c.value.gitops else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, file) in g.manifests.iter().enumerate() {
        let contents = repo.read(file).map_err(|r| {
            diag(
                &c.path,
                c.pos(&path!["gitops", "manifests", i]),
                format!("GitOps manifest file {r}"),
                r.fix(),
            )
        })?;
        out.push(ManifestFile {
            name: String::new(),
            file: file.clone(),
            contents,
        });
    }
    Ok(out)
}

/// The objects vixen writes to hand the apps over (without the age key Secret, which the
/// agent adds from the key it holds: see [`sops_secret`]).
pub fn handover_objects(g: &GitopsSpec) -> Vec<Value> {
    let ns = g.tool.namespace();
    match g.tool {
        GitopsTool::Flux => {
            let interval = g.interval.as_deref().unwrap_or(DEFAULT_INTERVAL);
            let mut source = json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": { "name": APPS, "namespace": ns },
                "spec": { "interval": interval, "url": g.url, "ref": { "branch": g.branch } },
            });
            if let Some(s) = &g.credentials_secret {
                source["spec"]["secretRef"] = json!({ "name": s });
            }
            let kustomization = json!({
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": { "name": APPS, "namespace": ns },
                "spec": {
                    "interval": interval,
                    "path": format!("./{}", g.path.trim_start_matches("./")),
                    "prune": true,
                    "sourceRef": { "kind": "GitRepository", "name": APPS },
                    "decryption": { "provider": "sops", "secretRef": { "name": SOPS_SECRET } },
                },
            });
            vec![source, kustomization]
        }
        GitopsTool::Argocd => {
            let mut out = Vec::new();
            if g.credentials_secret.is_none() {
                out.push(json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": "vixen-apps-repo",
                        "namespace": ns,
                        "labels": { "argocd.argoproj.io/secret-type": "repository" },
                    },
                    "type": "Opaque",
                    "stringData": { "type": "git", "url": g.url },
                }));
            }
            out.push(json!({
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": { "name": APPS, "namespace": ns },
                "spec": {
                    "project": "default",
                    "source": {
                        "repoURL": g.url,
                        "targetRevision": g.branch,
                        "path": g.path.trim_start_matches("./"),
                    },
                    "destination": { "server": "https://kubernetes.default.svc", "namespace": ns },
                    "syncPolicy": { "automated": { "prune": true, "selfHeal": true } },
                },
            }));
            out
        }
    }
}

/// The Secret that gives `tool` the age identities `keys` (an age keys file's text).
pub fn sops_secret(tool: GitopsTool, keys: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": SOPS_SECRET, "namespace": tool.namespace() },
        "type": "Opaque",
        "stringData": { tool.age_key_name(): keys },
    })
}

/// Every object of the handover but the age key: the install manifests, the tool's namespace
/// when they do not create it, and [`handover_objects`]. Empty without `gitops:`.
///
/// # Errors
/// As [`install_files`] and [`objects`].
pub fn gitops_objects(repo: &Repo) -> Result<Vec<Value>, Diagnostic> {
    let Some(g) = &repo.cluster.value.gitops else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for m in install_files(repo)? {
        out.extend(objects(&m)?.into_iter().map(|o| o.object));
    }
    let ns = g.tool.namespace();
    let has_ns = out
        .iter()
        .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == ns);
    if !has_ns {
        out.insert(
            0,
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
        );
    }
    out.extend(handover_objects(g));
    Ok(out)
}

/// The rules of `gitops:`.
pub(crate) fn gitops_rules(repo: &Repo, d: &mut Diagnostics) {
    let c = &repo.cluster;
    let Some(g) = &c.value.gitops else {
        return;
    };
    let f = c.path.as_path();
    let at = |p: &str| c.pos(&path!["gitops", p]);
    if g.manifests.is_empty() {
        d.push(
            f,
            at("manifests"),
            format!(
                "`gitops.manifests` is empty: vixen installs {} from them",
                g.tool.title()
            ),
            match g.tool {
                GitopsTool::Flux => {
                    "flux install --export > flux/gotk-components.yaml, then list it"
                }
                GitopsTool::Argocd => {
                    "save Argo CD's install.yaml of the version you want in the repo, then list it"
                }
            },
        );
    }
    for (i, file) in g.manifests.iter().enumerate() {
        if is_sops_patch(file) {
            d.push(
                f,
                c.pos(&path!["gitops", "manifests", i]),
                format!(
                    "`{file}` is SOPS-encrypted: install manifests are public, keep them in clear"
                ),
                "decrypt it, or move secrets into an addon",
            );
        }
    }
    match install_files(repo) {
        Err(e) => d.0.push(e),
        Ok(files) => {
            let mut crds = Vec::new();
            let mut readable = true;
            for m in &files {
                match objects(m) {
                    Ok(objs) => crds.extend(
                        objs.into_iter()
                            .filter(|o| o.kind() == "CustomResourceDefinition")
                            .map(|o| o.name().to_owned()),
                    ),
                    Err(e) => {
                        readable = false;
                        d.0.push(e);
                    }
                }
            }
            if readable && !g.manifests.is_empty() {
                for need in g.tool.crds() {
                    if !crds.iter().any(|c| c == need) {
                        d.push(
                            f,
                            at("manifests"),
                            format!("the {} manifests hold no CRD `{need}`", g.tool.title()),
                            "export the whole install (with its CRDs), not only the controllers",
                        );
                    }
                }
            }
        }
    }
    if let Err(why) = url_problem(&g.url) {
        d.push(f, at("url"), why, "write it as https://host/owner/repo.git or ssh://git@host/owner/repo.git, and keep credentials in `credentialsSecret`");
    }
    if let Err(why) = branch_problem(&g.branch) {
        d.push(
            f,
            at("branch"),
            why,
            "name a branch as `git branch` would accept it",
        );
    }
    if let Err(why) = path_problem(&g.path) {
        d.push(
            f,
            at("path"),
            why,
            "give the apps folder relative to the repository root, e.g. `apps`",
        );
    }
    match (&g.interval, g.tool) {
        (Some(_), GitopsTool::Argocd) => d.push(
            f,
            at("interval"),
            "`interval` is Flux's; Argo CD polls on its own (`timeout.reconciliation` in argocd-cm)",
            "remove `interval`",
        ),
        (Some(i), GitopsTool::Flux) if !is_flux_duration(i) => d.push(
            f,
            at("interval"),
            format!("`{i}` is not a Flux interval"),
            "write a duration such as 30s, 1m or 1h30m",
        ),
        _ => {}
    }
    if let Some(s) = &g.credentials_secret
        && !is_dns_subdomain(s)
    {
        d.push(
            f,
            at("credentialsSecret"),
            format!("`{s}` is not a valid Secret name"),
            "use lowercase letters, digits, `-` and `.` (at most 253 characters)",
        );
    }
}

fn url_problem(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("the GitOps URL has no scheme (Flux accepts http, https and ssh)".into());
    };
    if !matches!(scheme, "https" | "http" | "ssh") {
        return Err(format!(
            "the GitOps URL scheme `{scheme}` is not http, https or ssh"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the GitOps URL holds a space or a control character".into());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with('@') || authority.ends_with('@') {
        return Err("the GitOps URL names no host".into());
    }
    if scheme != "ssh" && authority.contains('@') {
        // Never quote it: this is where a token would be.
        return Err(
            "the GitOps URL carries credentials, and cluster.yaml is in clear in Git".into(),
        );
    }
    if scheme == "ssh"
        && authority
            .split('@')
            .next()
            .unwrap_or_default()
            .contains(':')
    {
        return Err(
            "the GitOps URL carries a password, and cluster.yaml is in clear in Git".into(),
        );
    }
    Ok(())
}

fn branch_problem(b: &str) -> Result<(), String> {
    let bad = b.is_empty()
        || b.starts_with(['-', '/', '.'])
        || b.ends_with(['/', '.'])
        || b.ends_with(".lock")
        || b.contains("..")
        || b.contains("//")
        || b.contains("@{")
        || b.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        });
    if bad {
        Err(format!("`{b}` is not a valid branch name"))
    } else {
        Ok(())
    }
}

fn path_problem(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("the apps path is empty".into());
    }
    if Path::new(p).is_absolute() || p.contains('\\') {
        return Err(format!(
            "the apps path `{p}` must be relative to the repository root"
        ));
    }
    if p.split('/').any(|s| s == "..") {
        return Err(format!(
            "the apps path `{p}` climbs out of the repository (`..`)"
        ));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err("the apps path holds a control character".into());
    }
    Ok(())
}

/// Flux's interval pattern `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`.
fn is_flux_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let int = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if int == 0 {
            return false;
        }
        rest = &rest[int..];
        if let Some(r) = rest.strip_prefix('.') {
            let frac = r.len() - r.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if frac == 0 {
                return false;
            }
            rest = &r[frac..];
        }
        rest = if let Some(r) = rest.strip_prefix("ms") {
            r
        } else if let Some(r) = rest.strip_prefix(['s', 'm', 'h']) {
            r
        } else {
            return false;
        };
    }
    true
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux_intervals_follow_the_crd_pattern() {
        for ok in ["1m", "30s", "1h30m", "500ms", "1.5h", "10m0s"] {
            assert!(is_flux_duration(ok), "{ok}");
        }
        for bad in ["", "1", "m", "1d", "1 m", "-1m", "1.m", "1mm"] {
            assert!(!is_flux_duration(bad), "{bad}");
        }
    }

    #[test]
    fn urls_with_credentials_or_odd_schemes_are_refused() {
        for ok in [
            "https://git.example/me/cluster.git",
            "http://127.0.0.1:8080/repo.git",
            "ssh://git@github.com/me/cluster.git",
        ] {
            assert_eq!(url_problem(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("git@github.com:me/cluster.git", "no scheme"),
            ("file:///etc/passwd", "scheme `file`"),
            ("https://me:tok3n@git.example/r.git", "credentials"),
            ("ssh://git:pw@host/r.git", "password"),
            ("https:///r.git", "no host"),
            ("https://host/a b", "space"),
        ] {
            let got = url_problem(bad).unwrap_err();
            assert!(got.contains(why), "{bad}: {got}");
            assert!(
                !got.contains("tok3n"),
                "{bad}: the message quotes the token"
            );
        }
    }

    #[test]
    fn branches_and_paths() {
        for ok in ["main", "release/1.2", "feature-x"] {
            assert_eq!(branch_problem(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-x", "a..b", "a b", "x.lock", "a:b", "/a", "a/"] {
            assert!(branch_problem(bad).is_err(), "{bad}");
        }
        for ok in ["apps", "./apps", "clusters/home/apps"] {
            assert_eq!(path_problem(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/apps", "../x", "apps/../../x", "a\\b"] {
            assert!(path_problem(bad).is_err(), "{bad}");
        }
    }
}
