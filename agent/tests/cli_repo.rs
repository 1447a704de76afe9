//! `vixen validate` and `vixen render` as a user runs them: exit codes, file:line output, bytes.

use std::process::{Command, Output};

mod common;
use common::{copy_dir, example};

fn vixen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vixen"))
        .args(args)
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .output()
        .unwrap()
}

/// A copy of the example whose secrets bundle is a plaintext test bundle.
fn plaintext_example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example(), dir.path());
    let bundle = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("../crates/model/tests/testdata/bundle.yaml");
    std::fs::copy(bundle, dir.path().join("secrets/talos.sops.yaml")).unwrap();
    // A plaintext bundle is refused unless cluster.yaml says it is one on purpose.
    let cluster = dir.path().join("cluster.yaml");
    let text = std::fs::read_to_string(&cluster).unwrap().replace(
        "secrets: secrets/talos.sops.yaml",
        "secrets: {file: secrets/talos.sops.yaml, plaintext: true}",
    );
    std::fs::write(&cluster, text).unwrap();
    dir
}

#[test]
fn validate_example_exits_zero() {
    let out = vixen(&["validate", example().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("valid (5 nodes: 3 control planes, 2 workers)")
    );
}

#[test]
fn validate_reports_every_problem_with_file_line_col_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example(), dir.path());
    std::fs::remove_file(dir.path().join("nodes/cp-3.yaml")).unwrap();
    let w2 = dir.path().join("nodes/worker-2.yaml");
    let text = std::fs::read_to_string(&w2)
        .unwrap()
        .replace("127.0.10.5/24", "127.0.10.4/24");
    std::fs::write(&w2, text).unwrap();
    let out = vixen(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let root = dir.path().display().to_string();
    assert!(
        err.contains(&format!("{root}/nodes/cp-2.yaml:3:7: 2 control planes")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{root}/nodes/worker-2.yaml:8:17: address 127.0.10.4 is already used"
        )),
        "{err}"
    );
    assert!(err.contains("(fix: "), "{err}");
}

#[test]
fn render_is_deterministic_and_all_writes_private_files() {
    let dir = plaintext_example();
    let repo = dir.path().to_str().unwrap();
    let a = vixen(&["render", repo, "--node", "cp-1"]);
    let b = vixen(&["render", repo, "--node", "cp-1"]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    assert!(String::from_utf8_lossy(&a.stdout).contains("type: controlplane"));
    let w = vixen(&["render", repo, "--node", "worker-1"]);
    assert!(String::from_utf8_lossy(&w.stdout).contains("type: worker"));

    let out = dir.path().join("out");
    let all = vixen(&["render", repo, "--all", "--out", out.to_str().unwrap()]);
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    use std::os::unix::fs::PermissionsExt as _;
    for name in ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"] {
        let meta = std::fs::metadata(out.join(format!("{name}.yaml"))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
    assert_eq!(std::fs::read(out.join("cp-1.yaml")).unwrap(), a.stdout);
}

#[test]
fn render_unknown_node_names_the_nodes() {
    let dir = plaintext_example();
    let out = vixen(&["render", dir.path().to_str().unwrap(), "--node", "cp-9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("nodes: cp-1, cp-2, cp-3, worker-1, worker-2")
    );
}

#[test]
fn render_talosconfig_has_an_admin_cert_from_the_os_ca() {
    let dir = plaintext_example();
    let out = vixen(&["render", dir.path().to_str().unwrap(), "--talosconfig"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["context"], "homelab");
    let ctx = &cfg["contexts"]["homelab"];
    assert_eq!(
        ctx["endpoints"],
        serde_json::json!(["127.0.10.1", "127.0.10.2", "127.0.10.3"])
    );
    use base64::Engine as _;
    let crt = base64::engine::general_purpose::STANDARD
        .decode(ctx["crt"].as_str().unwrap())
        .unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&crt).unwrap();
    let cert = pem.parse_x509().unwrap();
    let org: Vec<_> = cert
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    assert_eq!(org, ["os:admin"]);
}

#[test]
fn broken_repo_renders_nothing() {
    let dir = plaintext_example();
    std::fs::remove_file(dir.path().join("nodes/cp-3.yaml")).unwrap();
    let out_dir = dir.path().join("out");
    let out = vixen(&[
        "render",
        dir.path().to_str().unwrap(),
        "--all",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!out_dir.exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 control planes"));
}
