//! Applying one patch file to a node's config, document by document, with the checks that
//! must hold after each document so a problem is reported at the document (and line) that
//! caused it.
//!
//! ```text
//! patch text ─parse_all─► docs ─┬─ apiVersion+kind ─► known kind? duplicate? ─► extra docs
//!   (positions from the          ├─ mapping ─► strategic merge ─┐
//!    encrypted file for a        └─ list ─► JSON patch, op by op ┴─► machine.type unchanged,
//!    *.sops.yaml patch)                                             shapes, labels, taints
//! ```
//!
//! A patch that came out of SOPS decryption is `secret`: no message then quotes a value of it.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::checks;
use crate::render::{diag, merge};
use crate::repo::Diagnostic;
use crate::types::NodeFile;
use crate::yaml::{self, Node, Pos, Seg};

/// What a patch file is applied to, and how to talk about it.
pub(crate) struct Target<'a> {
    /// The v1alpha1 document.
    pub main: &'a mut Value,
    /// Extra documents so far.
    pub extra: &'a mut Vec<Value>,
    /// The node.
    pub node: &'a NodeFile,
    /// Talos minor of the cluster (for the kinds it knows).
    pub talos_minor: u64,
    /// Kubernetes minor of the cluster (for the flags it still has).
    pub kubernetes_minor: u64,
}

/// Applies the patch `text` of `file`. `positions` are the documents of the file as written
/// (the encrypted form of a SOPS patch), used for positions when they match the text's.
pub(crate) fn apply_file(
    t: &mut Target<'_>,
    file: &Path,
    text: &str,
    positions: Option<&[Node]>,
    secret: bool,
) -> Result<(), Diagnostic> {
    let docs = yaml::parse_all(text).map_err(|e| {
        let message = if secret {
            "the decrypted patch is not valid YAML".to_string()
        } else {
            format!("invalid YAML in patch: {}", e.message)
        };
        diag(file, e.pos, message, "fix the YAML syntax here")
    })?;
    let positions = positions.filter(|p| p.len() == docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let at = positions.map_or(doc, |p| &p[i]);
        apply_doc(t, file, doc.to_json(), at, secret)?;
    }
    Ok(())
}

fn shown(v: &str, secret: bool) -> String {
    if secret {
        "(an encrypted value)".into()
    } else {
        format!("`{v}`")
    }
}

fn apply_doc(
    t: &mut Target<'_>,
    file: &Path,
    json: Value,
    at: &Node,
    secret: bool,
) -> Result<(), Diagnostic> {
    match json {
        Value::Object(map) if map.contains_key("apiVersion") || map.contains_key("kind") => {
            extra_doc(t, file, map, at, secret)
        }
        Value::Object(map) => {
            if map.get("sops").and_then(|s| s.get("mac")).is_some() {
                return Err(diag(
                    file,
                    at.key_position(&crate::path!["sops"]),
                    "this patch is SOPS-encrypted but its name does not end in .sops.yaml, so it \
                     would be applied as ciphertext"
                        .into(),
                    "rename it to <name>.sops.yaml (vixen decrypts those with the cluster's key)",
                ));
            }
            let before = labels_of(t.main);
            merge(t.main, Value::Object(map), &mut Vec::new());
            after_change(t, file, &before, secret, |path| at.position(path))
        }
        Value::Array(ops) => {
            for (i, op) in ops.into_iter().enumerate() {
                let pos = at.position(&crate::path![i]);
                let op: json_patch::PatchOperation = serde_json::from_value(op).map_err(|e| {
                    let why = if secret {
                        String::new()
                    } else {
                        format!(": {e}")
                    };
                    diag(
                        file,
                        pos,
                        format!("not a valid RFC 6902 JSON patch operation{why}"),
                        "each item needs `op` and `path` (and `value` or `from`)",
                    )
                })?;
                let before = labels_of(t.main);
                json_patch::patch(t.main, &json_patch::Patch(vec![op])).map_err(|e| {
                    diag(
                        file,
                        pos,
                        format!("JSON patch does not apply to {}: {e}", t.node.name),
                        "point the operation at a path that exists in the rendered config (see `vixen render`)",
                    )
                })?;
                after_change(t, file, &before, secret, |_| pos)?;
            }
            Ok(())
        }
        Value::Null => Ok(()),
        _ => Err(diag(
            file,
            at.pos,
            "a patch must be a mapping (strategic merge) or a list (JSON patch)".into(),
            "rewrite the document as a mapping or a list of operations",
        )),
    }
}

/// A separate config document: Talos' decoder (configloader/internal/decoder/decoder.go)
/// needs both `apiVersion` and `kind`, a kind it registered, and no duplicate
/// `apiVersion/kind/name`.
fn extra_doc(
    t: &mut Target<'_>,
    file: &Path,
    map: Map<String, Value>,
    at: &Node,
    secret: bool,
) -> Result<(), Diagnostic> {
    let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
    let (api, kind) = match (text("apiVersion"), text("kind")) {
        (Some(api), Some(kind)) => (api, kind),
        (None, _) => {
            return Err(diag(
                file,
                at.key_position(&crate::path!["kind"]),
                "a config document with `kind` needs `apiVersion` as well".into(),
                "add `apiVersion: v1alpha1`, or drop `kind` for a patch of the v1alpha1 document",
            ));
        }
        (Some(_), None) => {
            return Err(diag(
                file,
                at.key_position(&crate::path!["apiVersion"]),
                "a config document with `apiVersion` needs `kind` as well".into(),
                "add its `kind`, or drop `apiVersion` for a patch of the v1alpha1 document",
            ));
        }
    };
    if let Some(problem) = checks::kind_problem(&api, &kind, t.talos_minor) {
        let field = if problem.starts_with("`apiVersion") {
            "apiVersion"
        } else {
            "kind"
        };
        let pos = at.position(&crate::path![field]);
        let problem = if secret {
            "this config document's kind is not one Talos accepts".to_string()
        } else {
            problem
        };
        return Err(diag(
            file,
            pos,
            problem,
            "use a document kind Talos accepts (e.g. UserVolumeConfig), or a v1alpha1 patch",
        ));
    }
    let id = |d: &Value| {
        (
            d.get("apiVersion").cloned(),
            d.get("kind").cloned(),
            d.get("name").cloned(),
        )
    };
    let doc = Value::Object(map);
    if t.extra.iter().any(|e| id(e) == id(&doc)) {
        let name = doc.get("name").and_then(Value::as_str).unwrap_or("");
        return Err(diag(
            file,
            at.pos,
            format!(
                "a second {kind} document named {} for {}; Talos refuses duplicates",
                shown(name, secret),
                t.node.name
            ),
            "keep one document per kind and name",
        ));
    }
    t.extra.push(doc);
    Ok(())
}

type Labels = [Map<String, Value>; 3];

const LABEL_FIELDS: [&str; 3] = ["nodeLabels", "nodeAnnotations", "nodeTaints"];

fn labels_of(main: &Value) -> Labels {
    LABEL_FIELDS.map(|f| {
        main.get("machine")
            .and_then(|m| m.get(f))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    })
}

/// The checks after one document or operation; `pos` finds the position of a path in it.
fn after_change(
    t: &mut Target<'_>,
    file: &Path,
    before: &Labels,
    secret: bool,
    pos: impl Fn(&[Seg]) -> Pos,
) -> Result<(), Diagnostic> {
    if let Some((path, message)) = checks::shape_problem(t.main) {
        return Err(diag(
            file,
            pos(&path),
            message,
            "write the field in the shape Talos' v1alpha1 config has (see `vixen render`)",
        ));
    }
    if let Some((path, message)) = crate::k8s_removed::removed_problem(t.main, t.kubernetes_minor) {
        return Err(diag(
            file,
            pos(&path),
            message,
            "remove it from the patch (see the Kubernetes changelog of that version for what replaces it)",
        ));
    }
    if t.main.pointer("/machine/type") != Some(&json!(t.node.role.machine_type())) {
        return Err(diag(
            file,
            pos(&crate::path!["machine", "type"]),
            format!("patch changes machine.type of {}", t.node.name),
            "change the node's `role` in its node file instead",
        ));
    }
    let after = labels_of(t.main);
    for (i, field) in LABEL_FIELDS.iter().enumerate() {
        for (key, value) in &after[i] {
            if before[i].get(key) == Some(value) {
                continue;
            }
            let path = crate::path!["machine", *field, key.as_str()];
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                _ => {
                    return Err(diag(
                        file,
                        pos(&path),
                        format!("machine.{field}.{key} must be a single value"),
                        "write the value as a string",
                    ));
                }
            };
            let problem = checks::key_problem(key).or_else(|| match *field {
                "nodeLabels" => checks::label_value_problem(&text)
                    .map(|p| format!("the value of label `{key}` {p}")),
                "nodeTaints" => {
                    checks::taint_value_problem(&text).map(|p| format!("taint `{key}`: {p}"))
                }
                _ if checks::RESERVED_ANNOTATIONS.contains(&key.as_str()) => {
                    Some(format!("annotation `{key}` is reserved by Talos"))
                }
                _ => None,
            });
            if let Some(problem) = problem {
                let problem = if secret && *field == "nodeTaints" {
                    format!("taint `{key}` is not `value:Effect` with a valid value and effect")
                } else {
                    problem
                };
                return Err(diag(
                    file,
                    pos(&path),
                    format!("machine.{field}: {problem}"),
                    "use Kubernetes label syntax (and NoSchedule, PreferNoSchedule or NoExecute for taints)",
                ));
            }
        }
    }
    Ok(())
}
