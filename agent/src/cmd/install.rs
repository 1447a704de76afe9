//! `vixen bootstrap --install-repo URL`: once the new cluster's Kubernetes API answers, install
//! the in-cluster agent from the manifests built into this binary (the same files as
//! `manifests/`, with the labels its kustomization adds), pointed at the repo, with the age key
//! as the `vixen-age` Secret, and the optional `vixen-git` / `vixen-forge` Secrets when their
//! tokens are given. The talos.dev ServiceAccount is applied again until Talos serves its kind,
//! and the report says what the agent still lacks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use serde::Deserialize as _;
use vixen_engine::{Connector, KubeLink};
use zeroize::Zeroizing;

/// `manifests/`, in its kustomization's order.
const MANIFESTS: &[(&str, &str)] = &[
    (
        "namespace.yaml",
        include_str!("../../../manifests/namespace.yaml"),
    ),
    ("crd.yaml", include_str!("../../../manifests/crd.yaml")),
    (
        "serviceaccount.yaml",
        include_str!("../../../manifests/serviceaccount.yaml"),
    ),
    ("rbac.yaml", include_str!("../../../manifests/rbac.yaml")),
    (
        "talos-serviceaccount.yaml",
        include_str!("../../../manifests/talos-serviceaccount.yaml"),
    ),
    (
        "configmap.yaml",
        include_str!("../../../manifests/configmap.yaml"),
    ),
    (
        "deployment.yaml",
        include_str!("../../../manifests/deployment.yaml"),
    ),
    ("pdb.yaml", include_str!("../../../manifests/pdb.yaml")),
    (
        "service.yaml",
        include_str!("../../../manifests/service.yaml"),
    ),
];

/// What to install.
pub struct Install {
    /// The repo URL the agent follows.
    pub repo_url: String,
    /// Its branch.
    pub branch: String,
    /// The age identity file (else SOPS_AGE_KEY_FILE / SOPS_AGE_KEY).
    pub age_key: Option<PathBuf>,
    /// How long to wait for the API.
    pub timeout: Duration,
    /// How long to wait for Talos to serve the talos.dev ServiceAccount and create its Secret.
    pub talos_timeout: Duration,
    /// Where commit statuses go (derived from the URL or given), if known.
    pub forge: Option<vixen_forge::ForgeGuess>,
    /// The Git token (Secret `vixen-git`), if given.
    pub git_token: Option<Zeroizing<String>>,
    /// The forge token (Secret `vixen-forge`), if given.
    pub forge_token: Option<Zeroizing<String>>,
    /// The repo has a platform layer vixen applies (a CNI it delivers, addons, a GitOps
    /// handover): the agent gets `manifests/infrastructure/rbac.yaml` too, since installing a
    /// CNI or Flux needs rights over any kind in any namespace.
    pub infrastructure: bool,
}

/// `manifests/infrastructure/rbac.yaml`: the opt-in binding to cluster-admin.
const INFRASTRUCTURE_RBAC: &str = include_str!("../../../manifests/infrastructure/rbac.yaml");

/// Whether `repo` has a platform layer that needs [`INFRASTRUCTURE_RBAC`].
pub fn needs_infrastructure(repo: &vixen_model::Repo) -> bool {
    let c = &repo.cluster.value;
    !c.cni.manifests.is_empty() || !c.addons.is_empty() || c.gitops.is_some()
}

/// Reads a token file given on the command line (trimmed; never printed).
///
/// # Errors
/// When it cannot be read or is empty.
pub fn read_token(path: &std::path::Path, flag: &str) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("{flag} {}: cannot read it", path.display()))?,
    );
    let token = Zeroizing::new(text.trim().to_owned());
    anyhow::ensure!(
        !token.is_empty(),
        "{flag} {}: the file is empty (fix: write the token into it)",
        path.display()
    );
    Ok(token)
}

fn labels() -> serde_json::Value {
    serde_json::json!({ "app.kubernetes.io/name": "vixen", "app.kubernetes.io/part-of": "vixen" })
}

fn secret(name: &str, data: &[(&str, &[u8])]) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), b64.encode(v).into()))
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": { "name": name, "namespace": "vixen-system", "labels": labels() },
        "data": data,
    })
}

/// The documents to apply: the manifests with the kustomization's labels and `vixen-config`
/// filled in, then the Secrets.
fn documents(install: &Install) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut docs = Vec::new();
    let infrastructure = [("infrastructure/rbac.yaml", INFRASTRUCTURE_RBAC)];
    let extra: &[(&str, &str)] = if install.infrastructure {
        &infrastructure
    } else {
        &[]
    };
    for (file, text) in MANIFESTS.iter().chain(extra) {
        for de in serde_yaml_ng::Deserializer::from_str(text) {
            let mut doc = serde_json::Value::deserialize(de)
                .with_context(|| format!("built-in manifests/{file}"))?;
            if doc.is_null() {
                continue;
            }
            let labels = &mut doc["metadata"]["labels"];
            if !labels.is_object() {
                *labels = serde_json::json!({});
            }
            labels["app.kubernetes.io/name"] = "vixen".into();
            labels["app.kubernetes.io/part-of"] = "vixen".into();
            if doc["kind"] == "ConfigMap" && doc["metadata"]["name"] == "vixen-config" {
                let data = &mut doc["data"];
                data["VIXEN_REPO"] = install.repo_url.clone().into();
                data["VIXEN_BRANCH"] = install.branch.clone().into();
                // No placeholder is left behind: an unknown forge is an empty one (no statuses).
                let (forge, url, repo) = match &install.forge {
                    Some(f) => (f.forge.as_str(), f.base_url.as_str(), f.repo.as_str()),
                    None => ("", "", ""),
                };
                data["VIXEN_FORGE"] = forge.into();
                data["VIXEN_FORGE_URL"] = url.into();
                data["VIXEN_FORGE_REPO"] = repo.into();
            }
            docs.push(doc);
        }
    }
    let key = age_identity(install.age_key.as_ref())?;
    docs.push(secret("vixen-age", &[("age.agekey", key.as_bytes())]));
    if let Some(token) = &install.git_token {
        docs.push(secret("vixen-git", &[("token", token.as_bytes())]));
    }
    if let Some(token) = &install.forge_token {
        docs.push(secret("vixen-forge", &[("token", token.as_bytes())]));
    }
    Ok(docs)
}

/// The age identity text the repo was decrypted with.
fn age_identity(path: Option<&PathBuf>) -> anyhow::Result<Zeroizing<String>> {
    let path = path
        .cloned()
        .or_else(|| std::env::var_os("SOPS_AGE_KEY_FILE").map(PathBuf::from));
    match path {
        Some(p) => Ok(Zeroizing::new(std::fs::read_to_string(&p).with_context(|| format!("reading the age key {}", p.display()))?)),
        None => std::env::var("SOPS_AGE_KEY").map(Zeroizing::new).map_err(|_| anyhow::anyhow!("--install-repo needs the age key as a file (--age-key or SOPS_AGE_KEY_FILE) or SOPS_AGE_KEY")),
    }
}

/// What an install did and what the agent still lacks.
pub struct Installed {
    /// The admin kubeconfig the API answered with, to be written by the caller.
    pub kubeconfig: Vec<u8>,
    /// Without these the agent cannot run (the pods do not start).
    pub blocking: Vec<String>,
    /// Features off until the user adds something (the agent runs without them).
    pub optional: Vec<String>,
}

const TALOS_SA: &str = "ServiceAccount vixen-system/vixen-talos";

/// Waits for the API (through `address`'s Kubeconfig RPC), then applies everything; the
/// talos.dev ServiceAccount is applied again until Talos serves its kind (within
/// `talos_timeout`), then its Secret is waited for.
pub async fn run(
    kube: &KubeLink,
    talos: &Connector,
    address: &str,
    install: &Install,
) -> anyhow::Result<Installed> {
    let docs = documents(install)?;
    let until = Instant::now() + install.timeout;
    let client = loop {
        if let Some(c) = kube.client(&[address.to_string()]).await {
            break c;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "the Kubernetes API did not answer within {}s (the cluster's endpoint from {address}'s kubeconfig)",
            install.timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut report = vixen_k8s::install::apply(&client, &docs)
        .await
        .context("installing vixen")?;
    for id in &report.applied {
        eprintln!("  applied {id}");
    }
    let talos_until = Instant::now() + install.talos_timeout;
    let mut waited = false;
    // Talos applies the talos.dev CRD with its own manifests, some time after the API answers.
    while report.skipped.iter().any(|(id, _)| id == TALOS_SA) && Instant::now() < talos_until {
        if !waited {
            eprintln!(
                "  waiting up to {}s for Talos to serve talos.dev/v1alpha1 ServiceAccount",
                install.talos_timeout.as_secs()
            );
            waited = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again: Vec<serde_json::Value> = docs
            .iter()
            .filter(|d| vixen_k8s::install::object_id(d) == TALOS_SA)
            .cloned()
            .collect();
        let r = vixen_k8s::install::apply(&client, &again)
            .await
            .context("installing vixen")?;
        if !r.applied.is_empty() {
            eprintln!("  applied {TALOS_SA}");
            report.skipped.retain(|(id, _)| id != TALOS_SA);
            report.applied.extend(r.applied);
        }
    }
    let mut blocking = Vec::new();
    for (id, why) in &report.skipped {
        eprintln!("  skipped {id}: {why}");
        if id == TALOS_SA {
            blocking.push(format!(
                "{id}: the API did not serve talos.dev/v1alpha1 ServiceAccount within {}s; \
                 Talos serves it once machine.features.kubernetesTalosAPIAccess is enabled on the \
                 control planes (fix: enable it, then run this command again or `kubectl apply -f \
                 manifests/talos-serviceaccount.yaml`)",
                install.talos_timeout.as_secs()
            ));
        }
    }
    if blocking.is_empty() {
        // Talos' controller answers the ServiceAccount with the Secret the pods mount.
        loop {
            if vixen_k8s::install::secret_exists(&client, "vixen-system", "vixen-talos").await? {
                eprintln!("  Talos created Secret vixen-system/vixen-talos");
                break;
            }
            if Instant::now() >= talos_until {
                blocking.push(format!(
                    "Secret vixen-system/vixen-talos: Talos did not create it within {}s (fix: \
                     allow namespace vixen-system and role os:admin in \
                     machine.features.kubernetesTalosAPIAccess; `kubectl -n vixen-system get \
                     serviceaccounts.talos.dev vixen-talos -o yaml` shows Talos' reason)",
                    install.talos_timeout.as_secs()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let mut optional = Vec::new();
    let ssh = install.repo_url.starts_with("ssh://") || !install.repo_url.contains("://");
    if ssh {
        blocking.push(format!(
            "Git: {} is an SSH URL and the Deployment fetches over HTTPS with a token (fix: \
             install with the HTTPS URL, or patch the Deployment with --git-ssh-key-file and \
             --git-known-hosts)",
            vixen_git::redact_url(&install.repo_url)
        ));
    } else if install.git_token.is_none() {
        optional.push(
            "Git token: none (Secret vixen-git not created): the agent fetches anonymously, \
             which works for a public repo (fix for a private one: --git-token-file FILE)"
                .to_owned(),
        );
    }
    match (&install.forge, &install.forge_token) {
        (None, _) => optional.push(
            "commit statuses: off, the forge of this URL is not known (fix: --forge, \
             --forge-url, --forge-repo and --forge-token-file)"
                .to_owned(),
        ),
        (Some(f), None) => optional.push(format!(
            "commit statuses: off, no forge token (Secret vixen-forge not created; fix: \
             --forge-token-file FILE, a token that may post statuses to {} on {})",
            f.repo, f.forge
        )),
        (Some(_), Some(_)) => {}
    }
    optional.push(
        "push webhook: off (no webhook-secret key in Secret vixen-forge): the agent polls Git \
         every VIXEN_INTERVAL seconds (60)"
            .to_owned(),
    );
    let kubeconfig = vixen_engine::kube::kubeconfig(talos, address)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Installed {
        kubeconfig,
        blocking,
        optional,
    })
}
