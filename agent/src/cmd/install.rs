//! `vixen bootstrap --install-repo URL`: once the new cluster's Kubernetes API answers, install
//! the in-cluster agent from the manifests built into this binary (the same files as
//! `manifests/`, with the labels its kustomization adds), pointed at the repo, with the age key
//! as the `vixen-age` Secret. From then on every change is a `git push`.

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
}

/// The documents to apply: the manifests with the kustomization's labels and the repo set,
/// then the age key Secret.
fn documents(install: &Install) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut docs = Vec::new();
    for (file, text) in MANIFESTS {
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
                doc["data"]["VIXEN_REPO"] = install.repo_url.clone().into();
                doc["data"]["VIXEN_BRANCH"] = install.branch.clone().into();
            }
            docs.push(doc);
        }
    }
    let key = age_identity(install.age_key.as_ref())?;
    docs.push(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": { "name": "vixen-age", "namespace": "vixen-system", "labels": { "app.kubernetes.io/name": "vixen", "app.kubernetes.io/part-of": "vixen" } },
        "data": { "age.agekey": base64::engine::general_purpose::STANDARD.encode(key.as_bytes()) },
    }));
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

/// Waits for the API (through `address`'s Kubeconfig RPC), then applies everything. Returns
/// the admin kubeconfig the API answered with, to be written by the caller.
pub async fn run(
    kube: &KubeLink,
    talos: &Connector,
    address: &str,
    install: &Install,
) -> anyhow::Result<Vec<u8>> {
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
    let report = vixen_k8s::install::apply(&client, &docs)
        .await
        .context("installing vixen")?;
    for id in &report.applied {
        eprintln!("  applied {id}");
    }
    for (id, why) in &report.skipped {
        eprintln!("  skipped {id}: {why}");
    }
    vixen_engine::kube::kubeconfig(talos, address)
        .await
        .map_err(anyhow::Error::msg)
}
