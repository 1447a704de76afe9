//! JSON Schemas of the repo files, generated from the types (checked in under `schemas/`).

use crate::types::{ClusterFile, NetworkFile, NodeFile};

/// `(file name, pretty JSON)` for every file kind of the repo format.
pub fn schemas() -> Vec<(&'static str, String)> {
    let pretty =
        |s: schemars::Schema| serde_json::to_string_pretty(&s).expect("schemas serialize") + "\n";
    vec![
        (
            "cluster.schema.json",
            pretty(schemars::schema_for!(ClusterFile)),
        ),
        ("node.schema.json", pretty(schemars::schema_for!(NodeFile))),
        (
            "network.schema.json",
            pretty(schemars::schema_for!(NetworkFile)),
        ),
    ]
}
