//! `vixen import` (issue 18): a cluster made with Talos' own generator and patcher (the
//! `talos-validate` peer's `gen` and `patch` modes, as `talosctl gen config --config-patch`
//! and `talosctl machineconfig patch` make configs), installed with Talos' own client (the
//! `talos-client` peer, as `talosctl apply-config --insecure` and `bootstrap`), not through
//! vixen. vixen imports it over the Talos API; then Talos' own diff says vixen's render of
//! every node is what it runs, Talos' validator accepts every render, `vixen agent --once`
//! on the imported repo makes no mutating call (calls.jsonl), and a label added in Git goes
//! out live to that node only.
//!
//! Faults covered: a node whose secrets differ from the control plane's (another cluster's
//! node, or a tampered config) is refused by name and nothing is written; `--force` keeps it
//! as a SOPS-encrypted patch, never in plaintext.
//!
//! Addresses: 127.199.x.x.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::lab::*;

const V: &str = "v1.11.6";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn vixen() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vixen"));
    c.env("VIXEN_LOG", "warn").env_remove("SOPS_AGE_KEY_FILE");
    c
}

/// The patches of a typical home-lab cluster: a registry mirror for all, kernel args on the
/// control plane, a label on workers, and per node a hostname, a static address (a VIP on the
/// control plane, a VLAN on worker-2).
fn write_patches(dir: &Path, net: u8) {
    let files = [
        (
            "all.yaml",
            "machine:\n  registries:\n    mirrors:\n      docker.io:\n        endpoints:\n          - https://mirror.lab.internal\n",
        ),
        (
            "cp.yaml",
            "machine:\n  install:\n    extraKernelArgs:\n      - console=ttyS0\n",
        ),
        (
            "worker.yaml",
            "machine:\n  nodeLabels:\n    node.kubernetes.io/pool: general\n",
        ),
        (
            "cp-1.yaml",
            "machine:\n  network:\n    hostname: cp-1\n    interfaces:\n      - interface: eth0\n        addresses: [127.199.1.1/8]\n        dhcp: false\n        vip:\n          ip: 127.199.0.100\n",
        ),
        (
            "worker-1.yaml",
            "machine:\n  network:\n    hostname: worker-1\n    interfaces:\n      - interface: eth0\n        addresses: [127.199.1.2/8]\n        dhcp: false\n",
        ),
        (
            "worker-2.yaml",
            "machine:\n  network:\n    hostname: worker-2\n    interfaces:\n      - interface: eth0\n        addresses: [127.199.1.3/8]\n        dhcp: false\n        vlans:\n          - vlanId: 30\n            addresses: [127.199.30.3/8]\n            dhcp: false\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(
            dir.join(name),
            text.replace("127.199.1.", &format!("127.199.{net}."))
                .replace("127.199.0.100", &format!("127.199.{net}.100"))
                .replace("127.199.30.", &format!("127.199.{}.", net + 30)),
        )
        .unwrap();
    }
}

/// `talosctl gen config` plus one `machineconfig patch` per node: `gen/<node>.yaml`, the
/// nodes at 127.199.<net>.1-3 behind the endpoint 127.199.<net>.100.
fn generate(tv: &Path, dir: &Path, net: u8) {
    write_patches(dir, net);
    let gen_dir = dir.join("gen");
    std::fs::create_dir_all(&gen_dir).unwrap();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    run(Command::new(tv).args([
        "gen",
        "--name",
        "imported",
        "--endpoint",
        &format!("https://127.199.{net}.100:6443"),
        "--patch",
        &p("all.yaml"),
        "--patch-controlplane",
        &p("cp.yaml"),
        "--patch-worker",
        &p("worker.yaml"),
        "--out",
        gen_dir.to_str().unwrap(),
        "--secrets-out",
        gen_dir.join("secrets.yaml").to_str().unwrap(),
    ]));
    for (node, base) in [
        ("cp-1", "controlplane"),
        ("worker-1", "worker"),
        ("worker-2", "worker"),
    ] {
        run(Command::new(tv).args([
            "patch",
            "--in",
            &p(&format!("gen/{base}.yaml")),
            "--patch",
            &p(&format!("{node}.yaml")),
            "--out",
            &p(&format!("gen/{node}.yaml")),
        ]));
    }
}

fn age_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("age.key");
    run(Command::new("age-keygen").arg("-o").arg(&key));
    let text = std::fs::read_to_string(&key).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (key, recipient)
}

fn read_calls(lab: &Path) -> Vec<Call> {
    std::fs::read_to_string(lab.join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| Call {
            node: v["node"].as_str().unwrap_or_default().into(),
            method: v["method"].as_str().unwrap_or_default().into(),
            detail: v["detail"].clone(),
            result: v["result"].as_str().unwrap_or_default().into(),
        })
        .collect()
}

/// The lab's machines (name, role, maintenance address), in maintenance mode.
fn lab_up(dir: &Path, nodes: &[(&str, &str, &str)]) -> (PathBuf, Down) {
    let nodes: Vec<serde_json::Value> = nodes
        .iter()
        .map(|(name, role, maint)| {
            serde_json::json!({ "name": name, "role": role, "maintenance_address": maint, "talos_version": V })
        })
        .collect();
    std::fs::write(
        dir.join("spec.json"),
        serde_json::json!({ "nodes": nodes }).to_string(),
    )
    .unwrap();
    let lab = dir.join("lab");
    let pid = std::process::id().to_string();
    run(vixen()
        .args(["lab", "up", "--spec"])
        .arg(dir.join("spec.json"))
        .arg("--dir")
        .arg(&lab)
        .args(["--reboot-ms", "200", "--die-with", &pid]));
    (lab.clone(), Down(lab))
}

/// `talosctl apply-config --insecure -n MAINT -f FILE`.
fn install(tc: &Path, file: &Path, maint: &str) {
    run(Command::new(tc)
        .args(["--endpoints", maint, "--nodes", maint, "apply"])
        .arg(file)
        .arg("--insecure"));
}

/// `talosctl bootstrap`, retried while Talos is not ready for it.
fn bootstrap(tc: &Path, talosconfig: &Path, addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = Command::new(tc)
            .arg("--talosconfig")
            .arg(talosconfig)
            .args(["--endpoints", addr, "--nodes", addr, "bootstrap"])
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bootstrap never succeeded"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Waits until the configured node answers `talosctl version`.
fn wait_up(tc: &Path, talosconfig: &Path, addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ok = Command::new(tc)
            .arg("--talosconfig")
            .arg(talosconfig)
            .args(["--endpoints", addr, "--nodes", addr, "version"])
            .output()
            .unwrap()
            .status
            .success();
        if ok {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{addr} never came up");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// Talos' validator/generator and Talos' client (the test peers), or None when not built.
fn peers(test: &str) -> Option<(PathBuf, PathBuf)> {
    Some((
        vixen_lab::peers::for_test("talos-validate", test)?,
        vixen_lab::peers::for_test("talos-client", test)?,
    ))
}

/// `vixen import --talosconfig T --age-recipient R --out OUT` (the caller adds the nodes).
fn import_cmd(talosconfig: &Path, recipient: &str, out: &Path) -> Command {
    let mut c = vixen();
    c.arg("import")
        .arg("--talosconfig")
        .arg(talosconfig)
        .args(["--age-recipient", recipient])
        .arg("--out")
        .arg(out);
    c
}

/// `vixen agent --once` on the lab; the mutating calls it made.
fn agent_once(repo: &Path, lab: &Path, key: &Path) -> Vec<Call> {
    let mark = read_calls(lab).len();
    let out = vixen()
        .arg("agent")
        .arg("--once")
        .arg("--repo")
        .arg(repo)
        .arg("--lab")
        .arg(lab)
        .arg("--age-key")
        .arg(key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_calls(lab)
        .split_off(mark)
        .into_iter()
        .filter(Call::mutating)
        .collect()
}

#[test]
fn import_of_a_talosctl_made_cluster_changes_nothing_then_follows_git() {
    let test = "import_of_a_talosctl_made_cluster_changes_nothing_then_follows_git";
    let Some((tv, tc)) = peers(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(&tv, dir, 1);
    let talosconfig = dir.join("gen/talosconfig");

    let (lab, _down) = lab_up(
        dir,
        &[
            ("cp-1", "controlplane", "127.199.0.1"),
            ("worker-1", "worker", "127.199.0.2"),
            ("worker-2", "worker", "127.199.0.3"),
        ],
    );
    // Installed with Talos' client, as the docs say: apply-config --insecure, then bootstrap.
    for (node, maint) in [
        ("cp-1", "127.199.0.1"),
        ("worker-1", "127.199.0.2"),
        ("worker-2", "127.199.0.3"),
    ] {
        install(&tc, &dir.join(format!("gen/{node}.yaml")), maint);
    }
    bootstrap(&tc, &talosconfig, "127.199.1.1");
    for addr in ["127.199.1.2", "127.199.1.3"] {
        wait_up(&tc, &talosconfig, addr);
    }

    // vixen import.
    let (key, recipient) = age_key(dir);
    let repo = dir.join("repo");
    let before = read_calls(&lab).len();
    let out = run(import_cmd(&talosconfig, &recipient, &repo)
        .args(["--nodes", "127.199.1.1,127.199.1.2,127.199.1.3"]));
    assert!(out.contains("imported 3 nodes"), "{out}");
    let calls = read_calls(&lab);
    let mutating: Vec<&Call> = calls[before..].iter().filter(|c| c.mutating()).collect();
    assert!(mutating.is_empty(), "import changed nodes: {mutating:?}");
    let gets = calls[before..]
        .iter()
        .filter(|c| c.method == "/cosi.resource.State/Get" && c.result == "ok")
        .count();
    assert_eq!(gets, 3, "one machine-config read per node");

    // The repo: secrets encrypted (nothing secret in plaintext anywhere), valid, and each
    // node's render is, by Talos' own diff, what the node runs; Talos' validator accepts it.
    let bundle = std::fs::read_to_string(repo.join("secrets/talos.sops.yaml")).unwrap();
    assert!(
        bundle.contains("ENC[AES256_GCM,") && bundle.contains(&recipient),
        "{bundle}"
    );
    let cp_running = std::fs::read_to_string(dir.join("gen/cp-1.yaml")).unwrap();
    let running: serde_yaml_ng::Value = serde_yaml_ng::from_str(&cp_running).unwrap();
    let ca_key = running["machine"]["ca"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let token = running["cluster"]["secret"].as_str().unwrap().to_string();
    assert_no_secret(&repo, &[&ca_key, &token]);
    let keyed = |c: &mut Command| {
        c.env("SOPS_AGE_KEY_FILE", &key);
    };
    let mut validate = vixen();
    validate.arg("validate").arg(&repo);
    keyed(&mut validate);
    run(&mut validate);
    for node in ["cp-1", "worker-1", "worker-2"] {
        let mut render = vixen();
        render.arg("render").arg(&repo).args(["--node", node]);
        keyed(&mut render);
        let rendered = dir.join(format!("{node}.rendered.yaml"));
        std::fs::write(&rendered, run(&mut render)).unwrap();
        let diff = Command::new(&tv)
            .arg("diff")
            .arg(dir.join(format!("gen/{node}.yaml")))
            .arg(&rendered)
            .output()
            .unwrap();
        assert!(
            diff.status.success(),
            "{node}: Talos sees a change:\n{}",
            String::from_utf8_lossy(&diff.stdout)
        );
        run(Command::new(&tv).arg(&rendered));
    }
    // The common part went to patches for every node and per role, not copied per node.
    let cluster = std::fs::read_to_string(repo.join("cluster.yaml")).unwrap();
    assert!(cluster.contains("patches/all.yaml"), "{cluster}");
    let all = std::fs::read_to_string(repo.join("patches/all.yaml")).unwrap();
    assert!(all.contains("mirror.lab.internal"), "{all}");
    let worker = std::fs::read_to_string(repo.join("nodes/worker-1.yaml")).unwrap();
    assert!(
        worker.contains("node.kubernetes.io/pool: general"),
        "{worker}"
    );

    // vixen takes over: nothing to do.
    let mutating = agent_once(&repo, &lab, &key);
    assert!(
        mutating.is_empty(),
        "the first agent run changed nodes: {mutating:?}"
    );

    // A label in Git goes out live to that node only.
    let path = repo.join("nodes/worker-2.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("labels:\n", "labels:\n  vixen.dev/imported: 'yes'\n", 1);
    std::fs::write(&path, text).unwrap();
    let mutating = agent_once(&repo, &lab, &key);
    assert_eq!(
        mutating
            .iter()
            .map(|c| (c.node.as_str(), c.short()))
            .collect::<Vec<_>>(),
        [("worker-2", "ApplyConfiguration")],
        "{mutating:?}"
    );
    assert_ne!(mutating[0].detail["mode"], "REBOOT", "{:?}", mutating[0]);
    // The node runs the new render, byte for byte (read back with Talos' own client).
    let mut render = vixen();
    render.arg("render").arg(&repo).args(["--node", "worker-2"]);
    keyed(&mut render);
    let rendered = run(&mut render);
    assert!(rendered.contains("vixen.dev/imported"), "{rendered}");
    let got: serde_json::Value = serde_json::from_str(&run(Command::new(&tc)
        .arg("--talosconfig")
        .arg(&talosconfig)
        .args([
            "--endpoints",
            "127.199.1.3",
            "--nodes",
            "127.199.1.3",
            "--node-key",
            "node",
        ])
        .arg("get-machineconfig")))
    .unwrap();
    use sha2::Digest as _;
    assert_eq!(
        got["sha256"],
        format!("{:x}", sha2::Sha256::digest(rendered.as_bytes()))
    );
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.join("lab.json")).unwrap()).unwrap();
    for n in status["nodes"].as_array().unwrap() {
        assert_eq!(n["mode"], "configured", "{n}");
    }
}

/// A worker that kept an old bootstrap token (`cluster.token` rotated on the control plane
/// only): its secrets differ from the control plane's bundle. The import names the field and
/// writes nothing (no --out folder, no staging folder left, no mutating call); with --force
/// it keeps the field in a SOPS-encrypted patch of that node only, never in plaintext, and
/// the node itself answers "No changes." to the render (the import checks it).
#[test]
fn a_secret_differing_from_the_bundle_is_refused_by_field_and_forced_only_encrypted() {
    let test = "a_secret_differing_from_the_bundle_is_refused_by_field_and_forced_only_encrypted";
    let Some((tv, tc)) = peers(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(&tv, dir, 3);
    let old_token = "oldtok.0123456789abcdef";
    std::fs::write(
        dir.join("old-token.yaml"),
        format!("cluster:\n  token: {old_token}\n"),
    )
    .unwrap();
    let worker = dir.join("gen/worker-1.yaml");
    run(Command::new(&tv)
        .args(["patch", "--in"])
        .arg(&worker)
        .arg("--patch")
        .arg(dir.join("old-token.yaml"))
        .arg("--out")
        .arg(&worker));
    let (lab, _down) = lab_up(
        dir,
        &[
            ("cp-1", "controlplane", "127.199.5.1"),
            ("worker-1", "worker", "127.199.5.2"),
        ],
    );
    install(&tc, &dir.join("gen/cp-1.yaml"), "127.199.5.1");
    install(&tc, &worker, "127.199.5.2");
    let talosconfig = dir.join("gen/talosconfig");
    bootstrap(&tc, &talosconfig, "127.199.3.1");
    wait_up(&tc, &talosconfig, "127.199.3.2");
    let (key, recipient) = age_key(dir);
    let repo = dir.join("repo");
    let import = |force: bool| {
        let mut c = import_cmd(&talosconfig, &recipient, &repo);
        c.args(["--nodes", "127.199.3.1,127.199.3.2"]);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let mark = read_calls(&lab).len();
    let out = import(false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker-1: cluster.token"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(
        !err.contains(old_token),
        "the error printed the secret: {err}"
    );
    assert!(!repo.exists(), "a half import was written");
    let leftovers = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".vixen-import-")
        })
        .count();
    assert_eq!(leftovers, 0, "a staging folder was left behind");

    let out = import(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("kept SOPS-encrypted (--force): worker-1: cluster.token"),
        "{text}"
    );
    assert_no_secret(&repo, &[old_token]);
    let sops = std::fs::read_to_string(repo.join("patches/nodes/worker-1.sops.yaml")).unwrap();
    assert!(sops.contains("token: ENC[AES256_GCM,"), "{sops}");
    assert!(!repo.join("patches/nodes/cp-1.sops.yaml").exists());
    let calls = read_calls(&lab);
    let mutating: Vec<&Call> = calls[mark..].iter().filter(|c| c.mutating()).collect();
    assert!(mutating.is_empty(), "import changed nodes: {mutating:?}");
    // Talos' own diff agrees for the forced node.
    let mut render = vixen();
    render
        .arg("render")
        .arg(&repo)
        .args(["--node", "worker-1"])
        .env("SOPS_AGE_KEY_FILE", &key);
    let rendered = dir.join("worker-1.rendered.yaml");
    std::fs::write(&rendered, run(&mut render)).unwrap();
    run(Command::new(&tv).arg("diff").arg(&worker).arg(&rendered));
}

/// `sops encrypt --age R` of `plain` into `path` (the real sops, as a talhelper user runs it).
fn sops_encrypt(plain: &Path, path: &Path, recipient: &str) {
    let out = run(Command::new("sops")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .args(["encrypt", "--age", recipient])
        .arg(plain));
    std::fs::write(path, out).unwrap();
}

/// A talhelper folder (talconfig.yaml with `${VAR}`s from talenv.sops.yaml, talsecret.sops.yaml
/// as `talhelper gensecret` and sops make it) for a cluster whose configs came from the same
/// bundle: the import names the nodes as the talconfig does, takes talsecret's bundle, and
/// changes nothing; the agent then has nothing to do.
#[test]
fn import_from_talhelper_takes_its_names_and_bundle_and_changes_nothing() {
    let test = "import_from_talhelper_takes_its_names_and_bundle_and_changes_nothing";
    let Some((tv, tc)) = peers(test) else {
        return;
    };
    if Command::new("sops").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "sops is missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(&tv, dir, 7);
    let (key, recipient) = age_key(dir);
    let tal = dir.join("talhelper");
    std::fs::create_dir_all(&tal).unwrap();
    std::fs::write(
        tal.join("talconfig.yaml"),
        "clusterName: ${CLUSTER_NAME}\ntalosVersion: v1.11.6\nkubernetesVersion: v1.34.1\n\
         endpoint: https://${VIP}:6443\nnodes:\n  - hostname: control-1\n    ipAddress: 127.199.7.1\n    \
         controlPlane: true\n    installDisk: /dev/sda\n  - hostname: worker-1\n    ipAddress: 127.199.7.2\n    \
         controlPlane: false\n    installDisk: /dev/sda\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("talenv.yaml"),
        "CLUSTER_NAME: imported\nVIP: 127.199.7.100\n",
    )
    .unwrap();
    sops_encrypt(
        &dir.join("talenv.yaml"),
        &tal.join("talenv.sops.yaml"),
        &recipient,
    );
    sops_encrypt(
        &dir.join("gen/secrets.yaml"),
        &tal.join("talsecret.sops.yaml"),
        &recipient,
    );

    let (lab, _down) = lab_up(
        dir,
        &[
            ("cp-1", "controlplane", "127.199.6.1"),
            ("worker-1", "worker", "127.199.6.2"),
        ],
    );
    install(&tc, &dir.join("gen/cp-1.yaml"), "127.199.6.1");
    install(&tc, &dir.join("gen/worker-1.yaml"), "127.199.6.2");
    let talosconfig = dir.join("gen/talosconfig");
    bootstrap(&tc, &talosconfig, "127.199.7.1");
    wait_up(&tc, &talosconfig, "127.199.7.2");

    let repo = dir.join("repo");
    let mark = read_calls(&lab).len();
    let from_talhelper = |out: &Path| {
        let mut c = import_cmd(&talosconfig, &recipient, out);
        c.arg("--from")
            .arg(format!("talhelper:{}", tal.display()))
            .arg("--age-key")
            .arg(&key);
        c
    };
    let out = run(&mut from_talhelper(&repo));
    assert!(out.contains("imported 2 nodes"), "{out}");
    // talconfig's name for the control plane, its running hostname kept.
    let cp = std::fs::read_to_string(repo.join("nodes/control-1.yaml")).unwrap();
    assert!(
        cp.contains("name: control-1") && cp.contains("hostname: cp-1"),
        "{cp}"
    );
    assert!(repo.join("nodes/worker-1.yaml").exists());
    // The repo's bundle is talsecret's, as sops itself decrypts both.
    let decrypt = |p: &Path| -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&run(Command::new("sops")
            .env("SOPS_DISABLE_VERSION_CHECK", "1")
            .env("SOPS_AGE_KEY_FILE", &key)
            .arg("decrypt")
            .arg(p)))
        .unwrap()
    };
    assert_eq!(
        decrypt(&repo.join("secrets/talos.sops.yaml")),
        decrypt(&tal.join("talsecret.sops.yaml"))
    );
    let calls = read_calls(&lab);
    assert!(
        calls[mark..].iter().all(|c| !c.mutating()),
        "import changed a node"
    );
    let mutating = agent_once(&repo, &lab, &key);
    assert!(
        mutating.is_empty(),
        "the first agent run changed nodes: {mutating:?}"
    );

    // Fault: a talsecret of another cluster. Refused by field, nothing written.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    run(Command::new(&tv)
        .args([
            "gen",
            "--name",
            "x",
            "--endpoint",
            "https://127.199.7.100:6443",
            "--out",
        ])
        .arg(&other)
        .arg("--secrets-out")
        .arg(other.join("secrets.yaml")));
    sops_encrypt(
        &other.join("secrets.yaml"),
        &tal.join("talsecret.sops.yaml"),
        &recipient,
    );
    let repo2 = dir.join("repo2");
    let out = from_talhelper(&repo2).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("control-1: machine.token") && err.contains("secrets bundle"),
        "{err}"
    );
    assert!(!repo2.exists());
}

/// No file of the repo holds any of these strings.
fn assert_no_secret(dir: &Path, secrets: &[&str]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_secret(&path, secrets);
        } else {
            let text = std::fs::read_to_string(&path).unwrap();
            for s in secrets {
                assert!(
                    !text.contains(s),
                    "{} holds a secret in plaintext",
                    path.display()
                );
            }
        }
    }
}

struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_vixen"))
            .args(["lab", "down", "--dir"])
            .arg(&self.0)
            .output();
    }
}
