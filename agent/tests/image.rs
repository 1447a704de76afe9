//! What the container image ships: the binary built as the Containerfile builds it
//! (`--no-default-features`) links no simulator, and the crate graph points one way
//! (binary -> engine -> plan, talos, k8s, model; nothing depends upward).

use std::process::Command;

fn tree(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo");
    let out = Command::new(cargo)
        .current_dir(dir)
        .args([
            "tree", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}",
        ])
        .args(args)
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn names(tree: &str) -> Vec<String> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_image_build_links_no_lab_and_the_engine_depends_on_no_io_edge_above_it() {
    let image = names(&tree(&["-p", "vixen", "--no-default-features"]));
    assert!(image.iter().any(|n| n == "vixen-engine"), "{image:?}");
    assert!(
        !image.iter().any(|n| n == "vixen-lab"),
        "the image's binary links the lab simulator"
    );
    let dev = names(&tree(&["-p", "vixen"]));
    assert!(
        dev.iter().any(|n| n == "vixen-lab"),
        "the default build keeps `vixen lab`"
    );

    let engine = names(&tree(&["-p", "vixen-engine"]));
    for needed in ["vixen-plan", "vixen-talos", "vixen-k8s", "vixen-model"] {
        assert!(engine.iter().any(|n| n == needed), "engine uses {needed}");
    }
    for never in [
        "vixen",
        "vixen-lab",
        "vixen-git",
        "vixen-forge",
        "clap",
        "notify",
        "prometheus-client",
    ] {
        assert!(
            !engine.iter().any(|n| n == never),
            "the engine must not depend on {never}"
        );
    }
    let plan = names(&tree(&["-p", "vixen-plan"]));
    for never in ["vixen-talos", "vixen-k8s", "tonic", "kube", "tokio"] {
        assert!(
            !plan.iter().any(|n| n == never),
            "the planner is pure: no {never}"
        );
    }
}
