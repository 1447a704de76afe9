//! Loads, validates and renders a generated 1,000-node repo and prints the figures.
//! Target (README): load + validate + render all under 300 ms on one core.
//! Run: `cargo bench -p vixen-model --bench repo_1000`.

use std::path::Path;
use std::time::{Duration, Instant};

use vixen_model::Repo;
use vixen_model::render::render;
use vixen_model::validate::validate;

fn generate(dir: &Path, nodes: usize) {
    std::fs::create_dir_all(dir.join("nodes")).unwrap();
    std::fs::create_dir_all(dir.join("patches")).unwrap();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    let bundle = vixen_pki::SecretsBundle::generate().unwrap();
    std::fs::write(
        dir.join("secrets/talos.yaml"),
        serde_yaml_ng::to_string(&bundle).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("patches/common.yaml"),
        "machine:\n  sysctls:\n    vm.swappiness: \"10\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("cluster.yaml"),
        "name: big\nendpoint: https://127.1.0.1:6443\ntalos:\n  version: v1.11.6\nkubernetes:\n  version: 1.34.1\nsecrets: {file: secrets/talos.yaml, plaintext: true}\npatches:\n  all: [patches/common.yaml]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("network.yaml"),
        "pools:\n  - name: lb\n    cidrs: [127.200.0.0/24]\n",
    )
    .unwrap();
    for i in 0..nodes {
        let role = if i < 3 { "controlplane" } else { "worker" };
        let (a, b) = (i / 250, i % 250 + 2);
        let vip = if i < 3 { "    vip: 127.1.0.1\n" } else { "" };
        std::fs::write(
            dir.join(format!("nodes/n{i:04}.yaml")),
            format!(
                "name: n{i:04}\nrole: {role}\nmaintenanceAddress: 127.2.{a}.{b}\ninstallDisk: /dev/sda\ninterfaces:\n  - name: eth0\n    addresses: [127.1.{a}.{b}/16]\n{vip}    vlans:\n      - id: 30\n        addresses: [127.3.{a}.{b}/16]\nlabels:\n  rack: r{a}\n"
            ),
        )
        .unwrap();
    }
}

fn time<T>(label: &str, runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    samples.sort();
    let median = samples[runs / 2];
    println!(
        "{label:<28} median {:>8.1} ms   min {:>8.1} ms   ({runs} runs)",
        ms(median),
        ms(samples[0])
    );
    median
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1000);
    let bundle = vixen_pki::SecretsBundle::generate().unwrap();
    let repo = Repo::load(dir.path()).unwrap();
    assert!(validate(&repo).is_empty(), "{}", validate(&repo));
    println!("1,000-node repo (3 control planes, 997 workers), one thread:");
    let load = time("load (read + parse + type)", 15, || {
        Repo::load(dir.path()).unwrap()
    });
    let val = time("validate (all rules)", 15, || validate(&repo));
    let ren = time("render all 1,000 configs", 15, || {
        repo.nodes
            .iter()
            .map(|n| render(&repo, n, &bundle).unwrap().to_yaml().len())
            .sum::<usize>()
    });
    println!(
        "{:<28} median {:>8.1} ms   (target < 300 ms)",
        "load + validate + render",
        ms(load + val + ren)
    );
}
