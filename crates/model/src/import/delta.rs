//! The difference between what vixen renders for a node and what the node runs, as the
//! smallest set of patches in the render's own patch language (see `render.rs`): strategic
//! merge for maps (a key set, or deleted with `$patch: delete`), list items appended where
//! the running list extends the rendered one, an RFC 6902 `replace` where it does not, and
//! extra documents. Changes are grouped by where they hold: every node, every node of a role,
//! or one node.

use serde_json::{Map, Value, json};

/// One difference at a path of mapping keys from the v1alpha1 document's root.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// The key is set to this value (it is missing, or of another kind, in the render).
    Set(Value),
    /// The key is not in the running config.
    Delete,
    /// The running list is the rendered one with these items after it.
    Append(Vec<Value>),
    /// The running list, which does not extend the rendered one.
    Replace(Value),
    /// A config document after the v1alpha1 one (the path is empty).
    Document(Value),
}

/// The path of a change to the list of extra documents as a whole.
pub(crate) const DOCUMENTS: &str = "<documents>";

/// Changes with their paths.
pub(crate) type Changes = Vec<(Vec<String>, Change)>;

/// The changes that turn `rendered` into `running`: the v1alpha1 documents, then the others.
pub(crate) fn diff(
    rendered: &Value,
    running: &Value,
    rendered_extra: &[Value],
    running_extra: &[Value],
) -> Changes {
    let mut out = Vec::new();
    walk(rendered, running, &mut Vec::new(), &mut out);
    if rendered_extra != running_extra {
        if running_extra.starts_with(rendered_extra) {
            for doc in &running_extra[rendered_extra.len()..] {
                out.push((Vec::new(), Change::Document(doc.clone())));
            }
        } else {
            out.push((
                vec!["<documents>".into()],
                Change::Replace(json!(running_extra)),
            ));
        }
    }
    out
}

/// Lists Talos (and the render) merge by a key instead of appending.
fn merge_key(path: &[String]) -> Option<&'static str> {
    match path.last().map(String::as_str) {
        Some("interfaces") => Some("interface"),
        Some("vlans") => Some("vlanId"),
        _ => None,
    }
}

fn walk(rendered: &Value, running: &Value, path: &mut Vec<String>, out: &mut Changes) {
    match (rendered, running) {
        (Value::Object(r), Value::Object(a)) => {
            for (k, v) in a {
                path.push(k.clone());
                match r.get(k) {
                    None => out.push((path.clone(), Change::Set(v.clone()))),
                    Some(rv) => walk(rv, v, path, out),
                }
                path.pop();
            }
            for k in r.keys().filter(|k| !a.contains_key(*k)) {
                let mut p = path.clone();
                p.push(k.clone());
                out.push((p, Change::Delete));
            }
        }
        (Value::Array(r), Value::Array(a)) if r != a => {
            let extends = a.starts_with(r)
                && merge_key(path).is_none_or(|key| {
                    a[r.len()..].iter().all(|item| {
                        item.get(key)
                            .is_none_or(|id| !r.iter().any(|x| x.get(key) == Some(id)))
                    })
                });
            if extends && !r.is_empty() {
                out.push((path.clone(), Change::Append(a[r.len()..].to_vec())));
            } else if extends {
                out.push((path.clone(), Change::Set(running.clone())));
            } else {
                out.push((path.clone(), Change::Replace(running.clone())));
            }
        }
        (r, a) if r != a => out.push((path.clone(), Change::Set(a.clone()))),
        _ => {}
    }
}

/// The patch files (YAML text, in apply order) that make these changes: one strategic merge
/// document (with any extra documents after it), then one file of JSON patch operations.
pub(crate) fn patch_texts(changes: &[(Vec<String>, Change)]) -> Vec<(&'static str, String)> {
    let mut smp = Map::new();
    let mut docs = Vec::new();
    let mut ops = Vec::new();
    for (path, change) in changes {
        match change {
            Change::Set(v) => insert(&mut smp, path, v.clone()),
            Change::Delete => insert(&mut smp, path, json!({ "$patch": "delete" })),
            Change::Append(items) => insert(&mut smp, path, Value::Array(items.clone())),
            Change::Replace(v) => ops.push(json!({
                "op": "replace",
                "path": pointer(path),
                "value": v,
            })),
            Change::Document(d) => docs.push(d.clone()),
        }
    }
    let mut out = Vec::new();
    if !smp.is_empty() || !docs.is_empty() {
        let mut text = String::new();
        if !smp.is_empty() {
            text.push_str(&yaml(&Value::Object(smp)));
        }
        for d in docs {
            if !text.is_empty() {
                text.push_str("---\n");
            }
            text.push_str(&yaml(&d));
        }
        out.push(("", text));
    }
    if !ops.is_empty() {
        out.push(("-json", yaml(&Value::Array(ops))));
    }
    out
}

fn yaml(v: &Value) -> String {
    serde_yaml_ng::to_string(v).expect("JSON values always serialize")
}

fn insert(root: &mut Map<String, Value>, path: &[String], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = root;
    for p in parents {
        let next = at
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        at = next.as_object_mut().expect("made an object");
    }
    at.insert(last.clone(), v);
}

/// An RFC 6901 pointer to `path`.
fn pointer(path: &[String]) -> String {
    path.iter()
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The path as a dotted name for messages (`machine.install.extraKernelArgs`).
pub(crate) fn dotted(path: &[String]) -> String {
    if path.is_empty() {
        "a config document".into()
    } else {
        path.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::merge;

    /// Applies the patch texts the way the render does: strategic merge, then JSON patch.
    fn apply(base: &Value, changes: &Changes) -> Value {
        let mut out = base.clone();
        for (_, text) in patch_texts(changes) {
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let v: Value = serde::Deserialize::deserialize(doc).unwrap();
                match v {
                    Value::Array(_) => {
                        let p: json_patch::Patch = serde_json::from_value(v).unwrap();
                        json_patch::patch(&mut out, &p).unwrap();
                    }
                    v => merge(&mut out, v, &mut Vec::new()),
                }
            }
        }
        out
    }

    #[test]
    fn the_patches_turn_the_render_into_the_running_config() {
        let cases = [
            // A key added, one deleted, a scalar changed.
            (json!({"a": 1, "b": 2}), json!({"a": 3, "c": {"d": 4}})),
            // A list extended: appended; a list changed: replaced.
            (
                json!({"l": [1, 2], "m": [1, 2]}),
                json!({"l": [1, 2, 3], "m": [2]}),
            ),
            // Keyed lists: a new interface appended, a changed one replaced as a whole.
            (
                json!({"interfaces": [{"interface": "eth0", "dhcp": false}]}),
                json!({"interfaces": [{"interface": "eth0", "dhcp": false}, {"interface": "eth1"}]}),
            ),
            (
                json!({"interfaces": [{"interface": "eth0", "dhcp": false}]}),
                json!({"interfaces": [{"interface": "eth0"}]}),
            ),
            // An empty rendered list, a map where the render has a scalar.
            (
                json!({"sans": [], "x": "s"}),
                json!({"sans": ["a"], "x": {"y": 1}}),
            ),
            // Keys with `/` and `~` in a JSON pointer.
            (json!({"a/b~c": [1]}), json!({"a/b~c": [2]})),
        ];
        for (rendered, running) in cases {
            let changes = diff(&rendered, &running, &[], &[]);
            assert_eq!(
                apply(&rendered, &changes),
                running,
                "{rendered} -> {running}: {changes:?}"
            );
            assert!(diff(&running, &running, &[], &[]).is_empty());
        }
    }

    #[test]
    fn extra_documents_are_appended_or_reported() {
        let doc = json!({"apiVersion": "v1alpha1", "kind": "UserVolumeConfig", "name": "data"});
        let changes = diff(&json!({}), &json!({}), &[], std::slice::from_ref(&doc));
        assert_eq!(changes, vec![(Vec::new(), Change::Document(doc.clone()))]);
        assert!(
            patch_texts(&changes)[0]
                .1
                .contains("kind: UserVolumeConfig")
        );
        let reordered = diff(&json!({}), &json!({}), std::slice::from_ref(&doc), &[]);
        assert_eq!(reordered.len(), 1);
        assert!(matches!(reordered[0].1, Change::Replace(_)));
    }
}
