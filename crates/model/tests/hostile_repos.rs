//! The repo is untrusted input: one case per way a path can leave it. Each case plants a canary
//! string in a file outside the repo, points the repo at it, and expects the path refused at
//! the exact file:line:col of the field (or file) that names it, with the canary in no output
//! at all: no diagnostic, no error, no rendered config (issue 14: "the repo is a sandbox").

use std::os::unix::fs::symlink;
use std::path::Path;

mod common;
use common::{all_output, assert_found, demo_keys, example, example_copy, problems};

const CANARY: &str = "CANARY-5f0e-outside-the-repo";

/// Files outside the repo, each holding the canary, parseable or not.
fn plant_outside(outside: &Path) {
    std::fs::create_dir_all(outside.join("nodes")).unwrap();
    std::fs::create_dir_all(outside.join("patches")).unwrap();
    let patch = format!("machine:\n  env:\n    STOLEN: {CANARY}\n");
    std::fs::write(outside.join("patch.yaml"), &patch).unwrap();
    std::fs::write(
        outside.join("broken.yaml"),
        format!("{CANARY}: [unclosed\n"),
    )
    .unwrap();
    for name in ["common.yaml", "controlplane.yaml", "worker-2-storage.yaml"] {
        std::fs::write(outside.join("patches").join(name), &patch).unwrap();
    }
    for name in ["cp-1", "cp-2", "cp-3"] {
        let text = std::fs::read_to_string(example().join(format!("nodes/{name}.yaml")))
            .unwrap()
            .replace("rack-", &format!("{CANARY}-"));
        std::fs::write(outside.join(format!("nodes/{name}.yaml")), text).unwrap();
    }
    let cluster = std::fs::read_to_string(example().join("cluster.yaml"))
        .unwrap()
        .replace("name: homelab", &format!("name: {CANARY}"));
    std::fs::write(outside.join("cluster.yaml"), cluster).unwrap();
    std::fs::write(
        outside.join("secrets.yaml"),
        format!("cluster:\n  id: {CANARY}\n"),
    )
    .unwrap();
}

type Setup = fn(&Path, &Path);

/// (case, setup(repo, outside), expected location, words in the message)
const CASES: &[(&str, Setup, &str, &str)] = &[
    (
        "absolute patch path",
        |repo, outside| {
            let abs = outside.join("patch.yaml");
            common::edit(
                &repo.join("cluster.yaml"),
                "- patches/common.yaml",
                &format!("- {}", abs.display()),
            );
        },
        "cluster.yaml:18:7",
        "is an absolute path",
    ),
    (
        "patch path climbing out with ../",
        |repo, _| {
            common::edit(
                &repo.join("cluster.yaml"),
                "- patches/common.yaml",
                "- ../outside/broken.yaml",
            )
        },
        "cluster.yaml:18:7",
        "climbs out with `..`",
    ),
    (
        "symlinked patch file",
        |repo, outside| {
            std::fs::remove_file(repo.join("patches/common.yaml")).unwrap();
            symlink(outside.join("patch.yaml"), repo.join("patches/common.yaml")).unwrap();
        },
        "cluster.yaml:18:7",
        "symlink",
    ),
    (
        "relative symlink climbing out of the repo",
        |repo, _| {
            std::fs::remove_file(repo.join("patches/common.yaml")).unwrap();
            symlink(
                "../../outside/broken.yaml",
                repo.join("patches/common.yaml"),
            )
            .unwrap();
        },
        "cluster.yaml:18:7",
        "symlink",
    ),
    (
        "symlinked patches/ folder",
        |repo, outside| {
            std::fs::remove_dir_all(repo.join("patches")).unwrap();
            symlink(outside.join("patches"), repo.join("patches")).unwrap();
        },
        "cluster.yaml:18:7",
        "symlink",
    ),
    (
        "symlinked nodes/ folder",
        |repo, outside| {
            std::fs::remove_dir_all(repo.join("nodes")).unwrap();
            symlink(outside.join("nodes"), repo.join("nodes")).unwrap();
        },
        "nodes:1:1",
        "symlink",
    ),
    (
        "symlinked node file",
        |repo, outside| {
            std::fs::remove_file(repo.join("nodes/cp-1.yaml")).unwrap();
            symlink(
                outside.join("nodes/cp-1.yaml"),
                repo.join("nodes/cp-1.yaml"),
            )
            .unwrap();
        },
        "nodes/cp-1.yaml:1:1",
        "symlink",
    ),
    (
        "symlinked cluster.yaml",
        |repo, outside| {
            std::fs::remove_file(repo.join("cluster.yaml")).unwrap();
            symlink(outside.join("cluster.yaml"), repo.join("cluster.yaml")).unwrap();
        },
        "cluster.yaml:1:1",
        "symlink",
    ),
    (
        "symlinked secrets file",
        |repo, outside| {
            std::fs::remove_file(repo.join("secrets/talos.sops.yaml")).unwrap();
            symlink(
                outside.join("secrets.yaml"),
                repo.join("secrets/talos.sops.yaml"),
            )
            .unwrap();
        },
        "cluster.yaml:12:10",
        "symlink",
    ),
    (
        "secrets path climbing out",
        |repo, _| {
            common::edit(
                &repo.join("cluster.yaml"),
                "secrets: secrets/talos.sops.yaml",
                "secrets: secrets/../../outside/secrets.yaml",
            )
        },
        "cluster.yaml:12:10",
        "climbs out with `..`",
    ),
    (
        "absolute secrets path",
        |repo, outside| {
            let abs = outside.join("secrets.yaml");
            common::edit(
                &repo.join("cluster.yaml"),
                "secrets: secrets/talos.sops.yaml",
                &format!("secrets: {}", abs.display()),
            )
        },
        "cluster.yaml:12:10",
        "is an absolute path",
    ),
    (
        "node patch through a symlinked folder inside patches/",
        |repo, outside| {
            symlink(outside, repo.join("patches/more")).unwrap();
            common::edit(
                &repo.join("nodes/cp-1.yaml"),
                "",
                "patches: [patches/more/broken.yaml]\n",
            );
        },
        "nodes/cp-1.yaml:18:11",
        "symlink",
    ),
];

#[test]
fn every_hostile_path_is_refused_at_its_line_and_never_read() {
    let keys = demo_keys();
    for (case, setup, location, words) in CASES {
        let (dir, repo) = example_copy();
        let outside = dir.path().join("outside");
        plant_outside(&outside);
        setup(&repo, &outside);
        let found = problems(&repo);
        assert_found(&found, location, words);
        let everything = format!("{}\n{}", found.join("\n"), all_output(&repo, &keys));
        assert!(
            !everything.contains(CANARY),
            "{case}: the outside file's content reached the output:\n{everything}"
        );
    }
}

/// Symlinks that stay inside the repo are fine (a shared patch, a folder alias).
#[test]
fn symlinks_inside_the_repo_are_followed() {
    let (_dir, repo) = example_copy();
    std::fs::create_dir(repo.join("shared")).unwrap();
    std::fs::rename(
        repo.join("patches/common.yaml"),
        repo.join("shared/common.yaml"),
    )
    .unwrap();
    symlink("../shared/common.yaml", repo.join("patches/common.yaml")).unwrap();
    symlink("patches", repo.join("aliased")).unwrap();
    common::edit(
        &repo.join("nodes/cp-1.yaml"),
        "",
        "patches: [aliased/controlplane.yaml]\n",
    );
    assert_eq!(problems(&repo), Vec::<String>::new());
}
