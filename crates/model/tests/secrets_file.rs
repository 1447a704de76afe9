//! `validate` and the secrets file (issue 14 item 7, issue 15 item 5): a damaged or plaintext
//! bundle is refused at its file and line without a key; with the key, the MAC is verified; no
//! output ever holds a value of the bundle. SOPS patches are decrypted before they are applied.

use std::path::Path;

use vixen_model::Repo;
use vixen_sops::Keyring;

mod common;
use common::{
    all_output, assert_found, demo_keys, edit, example, example_copy, problems, testdata,
};

const BUNDLE: &str = "secrets/talos.sops.yaml";

/// Every value of the example's bundle longer than 8 characters, decrypted.
fn bundle_values() -> Vec<String> {
    let repo = Repo::load(&example()).unwrap();
    let bundle = vixen_model::secrets::load_bundle(&repo, &demo_keys()).unwrap();
    let yaml = serde_yaml_ng::to_string(&bundle).unwrap();
    yaml.lines()
        .filter_map(|l| l.split_once(": ").map(|(_, v)| v.trim().to_string()))
        .filter(|v| v.len() > 8)
        .collect()
}

/// Keyed validation's diagnostics.
fn keyed_problems(root: &Path, keys: &Keyring) -> Vec<String> {
    let repo = Repo::load(root).unwrap();
    vixen_model::validate::validate_with_keys(&repo, keys)
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A location and words of a message.
type At = (&'static str, &'static str);

/// (fixture, key-less location and words, keyed location and words)
const CASES: &[(&str, Option<At>, At)] = &[
    (
        "fail_tampered_mac.sops.yaml",
        None,
        ("secrets/talos.sops.yaml:36:10", "MAC mismatch"),
    ),
    // The values are intact but in another order: only the MAC comparison can tell.
    (
        "fail_values_reordered.sops.yaml",
        None,
        ("secrets/talos.sops.yaml:36:10", "MAC mismatch"),
    ),
    (
        "fail_truncated.sops.yaml",
        Some(("secrets/talos.sops.yaml:1:1", "not SOPS-encrypted")),
        ("secrets/talos.sops.yaml:1:1", "not SOPS-encrypted"),
    ),
    (
        "fail_empty.sops.yaml",
        Some(("secrets/talos.sops.yaml:1:1", "the file is empty")),
        ("secrets/talos.sops.yaml:1:1", "the file is empty"),
    ),
    (
        "fail_garbage.sops.yaml",
        Some(("secrets/talos.sops.yaml:1:1", "not UTF-8")),
        ("secrets/talos.sops.yaml:1:1", "not UTF-8"),
    ),
    (
        "fail_injected_plaintext.sops.yaml",
        Some((
            "secrets/talos.sops.yaml:8:12",
            "`trustdinfo.token` is not an ENC[...] value",
        )),
        (
            "secrets/talos.sops.yaml:8:12",
            "`trustdinfo.token` is not an ENC[...] value",
        ),
    ),
    (
        "fail_not_sops.yaml",
        Some(("secrets/talos.sops.yaml:1:1", "not SOPS-encrypted")),
        ("secrets/talos.sops.yaml:1:1", "not SOPS-encrypted"),
    ),
];

/// Each damaged bundle is refused at its line, without and with the key, and no value of the
/// real bundle shows up in any output.
#[test]
fn damaged_bundles_are_refused_at_their_line() {
    let values = bundle_values();
    assert!(values.len() >= 10, "{values:?}");
    for (fixture, keyless, keyed) in CASES {
        let (_dir, repo) = example_copy();
        std::fs::copy(testdata(fixture), repo.join(BUNDLE)).unwrap();
        let found = problems(&repo);
        match keyless {
            Some((loc, words)) => assert_found(&found, loc, words),
            None => assert_eq!(found, Vec::<String>::new(), "{fixture}"),
        }
        assert_found(&keyed_problems(&repo, &demo_keys()), keyed.0, keyed.1);
        let everything = all_output(&repo, &demo_keys());
        for v in &values {
            assert!(
                !everything.contains(v.as_str()),
                "{fixture}: a secret value leaked"
            );
        }
    }
}

/// A key that is not a recipient of the bundle: refused at the `sops:` key, naming the
/// recipients (public keys), and `load_bundle` fails the same way.
#[test]
fn wrong_key_is_refused() {
    let other = Keyring::from_file(testdata("other.agekey")).unwrap();
    let found = keyed_problems(&example(), &other);
    assert_found(
        &found,
        "secrets/talos.sops.yaml:24:1",
        "no age identity matches",
    );
    let repo = Repo::load(&example()).unwrap();
    let err = vixen_model::secrets::load_bundle(&repo, &other).unwrap_err();
    assert!(
        err.to_string()
            .contains("age1px928ssmd9lk2w2hu5was6hxhx47npmhta4v0dd3whzj0xu4tc8sglqzkl")
    );
}

/// The example bundle loads with its key; its values are the bundle's.
#[test]
fn example_bundle_loads_with_its_key() {
    let repo = Repo::load(&example()).unwrap();
    let bundle = vixen_model::secrets::load_bundle(&repo, &demo_keys()).unwrap();
    // Talos keeps PEM base64-encoded: this is "-----BEGIN CERTIFICATE--".
    assert!(
        bundle
            .certs
            .os
            .crt
            .starts_with("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0t")
    );
    assert_eq!(
        vixen_model::validate::validate_with_keys(&repo, &demo_keys()).0,
        Vec::new()
    );
}

/// A plaintext bundle is accepted only with `plaintext: true`, and then loads without a key.
#[test]
fn plaintext_bundle_needs_plaintext_true() {
    let (_dir, repo) = example_copy();
    std::fs::copy(testdata("fail_not_sops.yaml"), repo.join(BUNDLE)).unwrap();
    edit(
        &repo.join("cluster.yaml"),
        "secrets: secrets/talos.sops.yaml",
        "secrets:\n  file: secrets/talos.sops.yaml\n  plaintext: true",
    );
    assert_eq!(problems(&repo), Vec::<String>::new());
    let loaded = Repo::load(&repo).unwrap();
    vixen_model::secrets::load_bundle(&loaded, &Keyring::empty()).unwrap();
}

/// `plaintext: true` on an encrypted bundle is a mistake: reported at the flag.
#[test]
fn plaintext_true_on_an_encrypted_bundle() {
    let (_dir, repo) = example_copy();
    edit(
        &repo.join("cluster.yaml"),
        "secrets: secrets/talos.sops.yaml",
        "secrets:\n  file: secrets/talos.sops.yaml\n  plaintext: true",
    );
    assert_found(&problems(&repo), "cluster.yaml:14:14", "is SOPS-encrypted");
}

/// A plaintext bundle that lacks a key of the Talos layout: reported where it should be.
#[test]
fn bundle_shape_is_checked() {
    let (_dir, repo) = example_copy();
    let text = std::fs::read_to_string(testdata("fail_not_sops.yaml")).unwrap();
    let cut: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("bootstraptoken:"))
        .collect();
    std::fs::write(repo.join(BUNDLE), cut.join("\n") + "\nextra: 1\n").unwrap();
    edit(
        &repo.join("cluster.yaml"),
        "secrets: secrets/talos.sops.yaml",
        "secrets: {file: secrets/talos.sops.yaml, plaintext: true}",
    );
    let found = problems(&repo);
    assert_found(
        &found,
        "secrets/talos.sops.yaml:6:3",
        "no `secrets.bootstraptoken`",
    );
    assert_found(
        &found,
        "secrets/talos.sops.yaml:24:1",
        "`extra` is not a section",
    );
}

/// A `*.sops.yaml` patch: key-less validate checks it is encrypted, `render` without the key
/// refuses it, and `render_with` applies its decrypted content (no ciphertext, no `sops:`).
#[test]
fn sops_patches_are_decrypted_before_they_are_applied() {
    let (_dir, repo) = example_copy();
    std::fs::copy(
        testdata("env.sops.yaml"),
        repo.join("patches/env.sops.yaml"),
    )
    .unwrap();
    edit(
        &repo.join("nodes/cp-1.yaml"),
        "",
        "patches: [patches/env.sops.yaml]\n",
    );
    assert_eq!(problems(&repo), Vec::<String>::new());
    let loaded = Repo::load(&repo).unwrap();
    let cp1 = loaded.node("cp-1").unwrap();
    let inputs = vixen_model::secrets::load_render_inputs(&loaded, &demo_keys()).unwrap();
    let err = vixen_model::render::render(&loaded, cp1, &inputs.bundle).unwrap_err();
    assert_eq!(err.pos.line, 18, "{err}");
    assert!(
        err.to_string()
            .contains("SOPS-encrypted and was not decrypted"),
        "{err}"
    );
    let config = vixen_model::render::render_with(&loaded, cp1, &inputs).unwrap();
    assert_eq!(
        config.main["machine"]["env"]["VIXEN_TEST_SECRET"],
        "canary-sops-patch-value"
    );
    let yaml = config.to_yaml();
    assert!(!yaml.contains("ENC[") && !yaml.contains("sops:"), "{yaml}");
}

/// A patch named `*.sops.yaml` that is not encrypted, or has a plaintext value injected.
#[test]
fn sops_patch_in_clear_is_refused() {
    let (_dir, repo) = example_copy();
    std::fs::write(
        repo.join("patches/env.sops.yaml"),
        "machine:\n  env:\n    A: b\n",
    )
    .unwrap();
    edit(
        &repo.join("nodes/cp-1.yaml"),
        "",
        "patches: [patches/env.sops.yaml]\n",
    );
    assert_found(
        &problems(&repo),
        "patches/env.sops.yaml:1:1",
        "not SOPS-encrypted",
    );
    let text = std::fs::read_to_string(testdata("env.sops.yaml")).unwrap();
    let injected: String = text
        .lines()
        .map(|l| {
            if l.contains("VIXEN_TEST_SECRET") {
                "        VIXEN_TEST_SECRET: injected"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(repo.join("patches/env.sops.yaml"), injected).unwrap();
    assert_found(
        &problems(&repo),
        "patches/env.sops.yaml:3:28",
        "`machine.env.VIXEN_TEST_SECRET` is not an ENC[...] value",
    );
}
