//! A talhelper folder as the source of an import: `talconfig.yaml` (with `${VAR}` taken from
//! `talenv.sops.yaml` or `talenv.yaml`, as talhelper's envsubst does) names the nodes, their
//! addresses and roles; `talsecret.sops.yaml` (the `talosctl gen secrets` bundle, decrypted
//! with vixen's SOPS code) is the secrets bundle. The nodes' running configs still decide every
//! field (see `mod.rs`): talhelper generates them with Talos' generator, which vixen does not
//! re-run. Every file is read through the [`Sandbox`] of the folder.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use vixen_pki::SecretsBundle;
use vixen_sops::{Format, Keyring};

use super::ImportError;
use crate::Sandbox;
use crate::types::Role;

/// What an import takes from a talhelper folder.
#[derive(Debug)]
pub struct Talhelper {
    /// `clusterName`.
    pub cluster_name: String,
    /// The nodes: hostname, the address to read it at, role.
    pub nodes: Vec<(String, String, Role)>,
    /// The bundle of `talsecret.sops.yaml`.
    pub bundle: SecretsBundle,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TalConfig {
    cluster_name: String,
    #[serde(default)]
    nodes: Vec<TalNode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TalNode {
    hostname: String,
    ip_address: String,
    #[serde(default)]
    control_plane: bool,
}

fn problem(file: &str, reason: String) -> ImportError {
    ImportError::Field {
        node: "talhelper".into(),
        field: file.into(),
        reason,
    }
}

fn decrypt(
    sandbox: &Sandbox,
    rel: &str,
    keys: &Keyring,
) -> Result<Option<zeroize::Zeroizing<String>>, ImportError> {
    let text = match sandbox.read_to_string(rel) {
        Ok(t) => t,
        Err(r) if r.is_missing() => return Ok(None),
        Err(r) => return Err(problem(rel, r.to_string())),
    };
    let plain = vixen_sops::decrypt(text.as_bytes(), Format::Yaml, keys)
        .map_err(|e| problem(rel, format!("does not decrypt: {e}")))?;
    let s =
        std::str::from_utf8(plain.as_bytes()).map_err(|_| problem(rel, "is not UTF-8".into()))?;
    Ok(Some(zeroize::Zeroizing::new(s.to_string())))
}

/// `${VAR}`, `${VAR:-default}` and `$VAR` replaced from `env`; an unknown variable is an error
/// naming it and its line.
fn envsubst(text: &str, env: &BTreeMap<String, String>) -> Result<String, ImportError> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, default, used) = if let Some(body) = after.strip_prefix('{') {
                let end = body.find('}').ok_or_else(|| {
                    problem(
                        "talconfig.yaml",
                        format!("line {}: `${{` without `}}`", n + 1),
                    )
                })?;
                let inner = &body[..end];
                match inner.split_once(":-") {
                    Some((name, d)) => (name, Some(d), end + 2),
                    None => (inner, None, end + 2),
                }
            } else {
                let len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..len], None, len)
            };
            if name.is_empty() {
                out.push('$');
                rest = after;
                continue;
            }
            let value = env
                .get(name)
                .map(String::as_str)
                .or(default)
                .ok_or_else(|| {
                    problem(
                        "talconfig.yaml",
                        format!(
                            "line {}: `{name}` is not set in talenv.sops.yaml or talenv.yaml",
                            n + 1
                        ),
                    )
                })?;
            out.push_str(value);
            rest = &after[used..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Reads the talhelper folder `dir`, decrypting its SOPS files with `keys`.
///
/// # Errors
/// A file that is missing, does not decrypt or does not parse, by name (and line); never a
/// decrypted value.
pub fn read(dir: &Path, keys: &Keyring) -> Result<Talhelper, ImportError> {
    let sandbox =
        Sandbox::open(dir).map_err(|e| problem(".", format!("cannot be opened: {}", e.kind())))?;
    let mut env = BTreeMap::new();
    let plain_env = match sandbox.read_to_string("talenv.yaml") {
        Ok(t) => Some(zeroize::Zeroizing::new(t)),
        Err(r) if r.is_missing() => None,
        Err(r) => return Err(problem("talenv.yaml", r.to_string())),
    };
    for (rel, text) in [
        ("talenv.yaml", plain_env),
        (
            "talenv.sops.yaml",
            decrypt(&sandbox, "talenv.sops.yaml", keys)?,
        ),
    ] {
        if let Some(text) = text {
            let vars: BTreeMap<String, serde_yaml_ng::Value> = serde_yaml_ng::from_str(&text)
                .map_err(|_| problem(rel, "is not a map of variables".into()))?;
            for (k, v) in vars {
                let v = match v {
                    serde_yaml_ng::Value::String(s) => s,
                    serde_yaml_ng::Value::Number(n) => n.to_string(),
                    serde_yaml_ng::Value::Bool(b) => b.to_string(),
                    _ => return Err(problem(rel, format!("`{k}` is not a scalar"))),
                };
                env.insert(k, v);
            }
        }
    }
    let raw = sandbox
        .read_to_string("talconfig.yaml")
        .map_err(|r| problem("talconfig.yaml", r.to_string()))?;
    let text = envsubst(&raw, &env)?;
    let config: TalConfig = serde_yaml_ng::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("line {}: ", l.line()))
            .unwrap_or_default();
        problem(
            "talconfig.yaml",
            format!(
                "{at}not a talconfig: {}",
                e.to_string().split(" at line").next().unwrap_or("")
            ),
        )
    })?;
    let secret = decrypt(&sandbox, "talsecret.sops.yaml", keys)?.ok_or_else(|| {
        problem(
            "talsecret.sops.yaml",
            "is missing (talhelper gensecret writes it)".into(),
        )
    })?;
    let bundle: SecretsBundle = serde_yaml_ng::from_str(&secret).map_err(|_| {
        problem(
            "talsecret.sops.yaml",
            "is not a Talos secrets bundle".into(),
        )
    })?;
    let nodes = config
        .nodes
        .into_iter()
        .map(|n| {
            let address = n
                .ip_address
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            let role = if n.control_plane {
                Role::Controlplane
            } else {
                Role::Worker
            };
            (n.hostname, address, role)
        })
        .collect();
    Ok(Talhelper {
        cluster_name: config.cluster_name,
        nodes,
        bundle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envsubst_replaces_as_talhelper_does_and_names_a_missing_variable() {
        let env: BTreeMap<String, String> = [("IP".to_string(), "10.0.0.1".to_string())].into();
        assert_eq!(
            envsubst("a: ${IP}\nb: $IP/24\nc: ${NONE:-x}\nd: $$\n", &env).unwrap(),
            "a: 10.0.0.1\nb: 10.0.0.1/24\nc: x\nd: $$\n"
        );
        let err = envsubst("a: 1\nb: ${MISSING}\n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("MISSING"), "{err}");
    }
}
