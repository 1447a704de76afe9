//! The checked-in schemas under `schemas/` must match the Rust types.
//! Regenerate with `UPDATE_SCHEMAS=1 cargo test -p vixen-model --test schema_drift`.

#[test]
fn checked_in_schemas_match_the_types() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("../../schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    for (name, text) in vixen_model::schema::schemas() {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_SCHEMAS=1", path.display()));
        assert!(
            on_disk == text,
            "{} drifted from the types; run with UPDATE_SCHEMAS=1 and commit",
            path.display()
        );
    }
}
