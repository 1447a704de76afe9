//! The lab harness of the story tests: a lab of the homelab example on its own loopback range
//! (127.K.x.x), driven through the `vixen` binary, observed through calls.jsonl, lab.json and
//! etcdctl. The lab is stopped when the value is dropped, pass or fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::{copy_dir, example};

pub const MUTATING: &[&str] = &[
    "ApplyConfiguration",
    "Upgrade",
    "Reset",
    "Bootstrap",
    "Reboot",
    "EtcdRemoveMemberByID",
    "EtcdLeaveCluster",
    "EtcdForfeitLeadership",
];

pub struct Lab {
    _tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub lab: PathBuf,
    pub k: u8,
}

pub fn rewrite_all(dir: &Path, from: &str, to: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rewrite_all(&path, from, to);
        } else if path.extension().is_some_and(|e| e == "yaml")
            && !path.ends_with("talos.sops.yaml")
        {
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replace(from, to)).unwrap();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Call {
    pub node: String,
    pub method: String,
    pub detail: Value,
    pub result: String,
}

impl Call {
    pub fn short(&self) -> &str {
        self.method.rsplit('/').next().unwrap_or(&self.method)
    }
    /// Changes something (a dry-run apply does not).
    pub fn mutating(&self) -> bool {
        MUTATING.contains(&self.short()) && self.detail["dry_run"] != true
    }
}

impl Lab {
    /// The homelab example on 127.K.0.0/16, stabilization 0s, with `prepare` applied to the repo
    /// after the lab started.
    pub fn start(k: u8, prepare: impl FnOnce(&Path)) -> Lab {
        Self::start_with(k, &[], prepare)
    }

    /// `start` with extra `lab up` arguments.
    pub fn start_with(k: u8, extra: &[&str], prepare: impl FnOnce(&Path)) -> Lab {
        Self::start_full(k, extra, |_| {}, prepare)
    }

    /// `start_with`, with `before` applied to the repo before the lab starts (the lab's
    /// machines come from the repo: its Talos version, for one).
    pub fn start_full(
        k: u8,
        extra: &[&str],
        before: impl FnOnce(&Lab),
        prepare: impl FnOnce(&Path),
    ) -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        copy_dir(&example(), &repo);
        rewrite_all(&repo, "127.0.", &format!("127.{k}."));
        let lab = Lab {
            repo,
            lab: tmp.path().join("lab"),
            _tmp: tmp,
            k,
        };
        lab.edit("cluster.yaml", "stabilization: 30s", "stabilization: 0s");
        before(&lab);
        // The lab has a machine for every node of the example; `prepare` may then take nodes
        // out of Git (their machines wait in maintenance mode, as spare hardware does).
        // A killed test run takes its lab with it.
        let pid = std::process::id().to_string();
        let mut args = vec![
            "lab",
            "up",
            "--repo",
            lab.repo.to_str().unwrap(),
            "--dir",
            lab.lab.to_str().unwrap(),
            "--reboot-ms",
            "200",
            "--die-with",
            &pid,
        ];
        args.extend_from_slice(extra);
        let out = lab.vixen(&args);
        assert!(
            out.status.success(),
            "lab up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        prepare(&lab.repo);
        lab
    }

    /// Injects a lab fault on `node` (`down`, `slow-reboot 2000`, `kubelet-not-ready`, ...).
    #[track_caller]
    pub fn fault(&self, node: &str, fault: &str) {
        let mut args = vec!["lab", "fault", "--dir", self.lab.to_str().unwrap(), node];
        args.extend(fault.split_whitespace());
        let out = self.vixen(&args);
        assert!(
            out.status.success(),
            "lab fault: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn ip(&self, rest: &str) -> String {
        format!("127.{}.{rest}", self.k)
    }

    pub fn vixen(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vixen"))
            .args(args)
            .env("SOPS_AGE_KEY_FILE", example().join("demo.agekey"))
            .env("VIXEN_LOG", "warn")
            .output()
            .unwrap()
    }

    pub fn target(&self) -> Vec<String> {
        vec![
            "--repo".into(),
            self.repo.to_str().unwrap().into(),
            "--lab".into(),
            self.lab.to_str().unwrap().into(),
        ]
    }

    pub fn run(&self, cmd: &[&str]) -> Output {
        let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        args.extend(self.target());
        if cmd[0] == "agent" {
            args.extend(["--ready-timeout".into(), "60".into()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.vixen(&refs)
    }

    #[track_caller]
    pub fn bootstrap(&self) {
        let out = self.run(&[
            "bootstrap",
            "--out",
            self.lab.join("out").to_str().unwrap(),
            "--timeout",
            "60",
        ]);
        assert!(
            out.status.success(),
            "bootstrap: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[track_caller]
    pub fn converge(&self) -> Output {
        let out = self.run(&["agent", "--once"]);
        assert!(
            out.status.success(),
            "agent: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn edit(&self, file: &str, old: &str, new: &str) {
        let path = self.repo.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(old.is_empty() || text.contains(old), "{file} lacks {old:?}");
        std::fs::write(
            &path,
            if old.is_empty() {
                format!("{text}{new}")
            } else {
                text.replace(old, new)
            },
        )
        .unwrap();
    }

    pub fn calls(&self) -> Vec<Call> {
        let text = std::fs::read_to_string(self.lab.join("calls.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                Call {
                    node: v["node"].as_str().unwrap_or_default().into(),
                    method: v["method"].as_str().unwrap_or_default().into(),
                    detail: v["detail"].clone(),
                    result: v["result"]
                        .as_str()
                        .map_or_else(|| v["result"].to_string(), String::from),
                }
            })
            .collect()
    }

    pub fn mark(&self) -> usize {
        self.calls().len()
    }

    pub fn mutating_since(&self, mark: usize) -> Vec<Call> {
        self.calls()
            .into_iter()
            .skip(mark)
            .filter(Call::mutating)
            .collect()
    }

    pub fn status(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.lab.join("lab.json")).unwrap()).unwrap()
    }

    pub fn node_status(&self, name: &str) -> Value {
        self.status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
            .clone()
    }

    /// Voting members and learners as etcd itself reports them, asked at `ip`.
    pub fn etcd_members(&self, ip: &str) -> Vec<(String, bool)> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &format!("http://{ip}:2379"),
                "--command-timeout=3s",
                "member",
                "list",
                "-w",
                "json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "etcdctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut members: Vec<(String, bool)> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or_default().to_string(),
                    m["isLearner"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        members.sort();
        members
    }

    pub fn full_cluster(k: u8) -> Lab {
        let lab = Lab::start(k, |_| {});
        lab.bootstrap();
        lab.converge();
        lab
    }

    /// `full_cluster`, with `before` applied to the repo before the lab starts (the machines'
    /// Talos version comes from it).
    pub fn full_cluster_before(k: u8, before: impl FnOnce(&Lab)) -> Lab {
        let lab = Lab::start_full(k, &[], before, |_| {});
        lab.bootstrap();
        lab.converge();
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_vixen"))
            .args(["lab", "down", "--dir", self.lab.to_str().unwrap()])
            .output();
    }
}

pub fn names(calls: &[Call]) -> BTreeSet<String> {
    calls.iter().map(|c| c.node.clone()).collect()
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub fn members(items: &[&str]) -> Vec<(String, bool)> {
    items.iter().map(|s| (s.to_string(), false)).collect()
}
