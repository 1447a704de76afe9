//! Talos' own config loader and validator (the `talos-validate` test peer, built on
//! `github.com/siderolabs/talos/pkg/machinery`, mode metal) on what vixen renders: every golden
//! config, and `vixen render` of every node of examples/homelab with its real SOPS bundle, must
//! pass; a deliberately broken config must fail with Talos' own message.
//!
//! Needs `bash tests/peers/build.sh`; skipped loudly without it, except in CI where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn validator(test: &str) -> Option<PathBuf> {
    vixen_lab::peers::for_test("talos-validate", test)
}

fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("..")
}

fn talos_validate(bin: &Path, file: &Path) -> Output {
    Command::new(bin)
        .args(["--mode", "metal"])
        .arg(file)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn goldens() -> Vec<PathBuf> {
    let dir = root().join("crates/model/tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "golden configs missing in {}",
        dir.display()
    );
    files
}

#[test]
fn every_golden_config_passes_talos_validation() {
    let Some(bin) = validator("every_golden_config_passes_talos_validation") else {
        return;
    };
    for file in goldens() {
        let out = talos_validate(&bin, &file);
        assert!(
            out.status.success(),
            "Talos rejects {}:\n{}",
            file.display(),
            text(&out)
        );
        assert!(
            text(&out).contains("is valid for metal mode"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn vixen_render_of_every_example_node_passes_talos_validation() {
    let Some(bin) = validator("vixen_render_of_every_example_node_passes_talos_validation") else {
        return;
    };
    let example = root().join("examples/homelab");
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vixen"))
        .arg("render")
        .arg(&example)
        .args(["--all", "--out"])
        .arg(out_dir.path())
        .env_remove("SOPS_AGE_KEY")
        .env("SOPS_AGE_KEY_FILE", example.join("demo.agekey"))
        .output()
        .unwrap();
    assert!(out.status.success(), "vixen render failed:\n{}", text(&out));
    let mut rendered: Vec<PathBuf> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    rendered.sort();
    let nodes = std::fs::read_dir(example.join("nodes")).unwrap().count();
    assert_eq!(rendered.len(), nodes, "one config per node of the example");
    for file in rendered {
        let out = talos_validate(&bin, &file);
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            out.status.success(),
            "Talos rejects vixen's {name}:\n{}",
            text(&out)
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Issue 17: the example runs Cilium as the CNI with kube-proxy replacement: every node's config
/// (`cni: none`, kube-proxy disabled, the manifests inline on control planes) passes Talos'
/// validator.
#[test]
fn vixen_render_with_cilium_as_the_cni_passes_talos_validation() {
    let Some(bin) = validator("vixen_render_with_cilium_as_the_cni_passes_talos_validation") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_dir(&root().join("examples/homelab"), &repo);
    let cluster = std::fs::read_to_string(repo.join("cluster.yaml")).unwrap();
    assert!(cluster.contains("name: cilium"), "the example runs Cilium");
    let out_dir = tmp.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_vixen"))
        .arg("render")
        .arg(&repo)
        .args(["--all", "--out"])
        .arg(&out_dir)
        .env_remove("SOPS_AGE_KEY")
        .env("SOPS_AGE_KEY_FILE", repo.join("demo.agekey"))
        .output()
        .unwrap();
    assert!(out.status.success(), "vixen render failed:\n{}", text(&out));
    let mut inline = 0;
    for e in std::fs::read_dir(&out_dir).unwrap() {
        let file = e.unwrap().path();
        let yaml = std::fs::read_to_string(&file).unwrap();
        assert!(yaml.contains("name: none"), "{}", file.display());
        if yaml.contains("inlineManifests:") {
            assert!(yaml.contains("kind: DaemonSet") && yaml.contains("disabled: true"));
            inline += 1;
        }
        let out = talos_validate(&bin, &file);
        assert!(
            out.status.success(),
            "Talos rejects {}:\n{}",
            file.display(),
            text(&out)
        );
    }
    assert_eq!(inline, 3, "the three control planes carry the manifests");
}

/// A golden config with one line changed, in a temporary file.
fn broken(from: &str, to: &str) -> tempfile::NamedTempFile {
    let golden = root().join("crates/model/tests/golden/cp-1.yaml");
    let yaml = std::fs::read_to_string(golden).unwrap();
    assert!(yaml.contains(from), "cp-1.yaml has no {from:?}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml.replacen(from, to, 1)).unwrap();
    file
}

#[test]
fn unknown_machine_type_fails_with_talos_message() {
    let Some(bin) = validator("unknown_machine_type_fails_with_talos_message") else {
        return;
    };
    let file = broken("  type: controlplane\n", "  type: nonsense\n");
    let out = talos_validate(&bin, file.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(r#"unknown machine type "nonsense""#),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_interface_cidr_fails_with_talos_message() {
    let Some(bin) = validator("bad_interface_cidr_fails_with_talos_message") else {
        return;
    };
    let file = broken("- 127.0.10.1/24\n", "- 127.0.10.1/99\n");
    let out = talos_validate(&bin, file.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("invalid CIDR address: 127.0.10.1/99"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_unknown_key_fails_talos_strict_loading() {
    let Some(bin) = validator("an_unknown_key_fails_talos_strict_loading") else {
        return;
    };
    let file = broken("persist: true\n", "persist: true\nbogus: 1\n");
    let out = talos_validate(&bin, file.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("unknown keys found during decoding"),
        "{}",
        text(&out)
    );
}
