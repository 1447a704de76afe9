//! `vixen plan`: what the agent would do now, for reviewers. It sees what the agent sees: the
//! in-cluster journal (ConfigMap `vixen-state`) when a Kubernetes API answers, else the local
//! state; the same drift check and dry-run adoption; and each config step shows the change as
//! Talos computes it (the dry-run apply's answer, as `talosctl apply --dry-run` prints it).
//! The layers above the nodes (CNI, addons, GitOps handover) are previewed by server-side dry
//! runs, one line per set: what would be created, changed, pruned or refused.
//! Read-only: dry runs only, and no state is written.

use std::process::ExitCode;

use vixen::daemon::{
    self,
    kube_store::{AgentStore, KubeStore},
};
use vixen_engine::{Engine, FileStore, Preview, Quiet, StateStore as _, Timeouts};
use vixen_plan::{Plan, Role, Step};

use super::agent::{DriftArg, Target, Wired};

/// The name of the in-cluster agent's journal (as `vixen agent --kube` keeps it).
const JOURNAL: &str = "vixen-state";

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: Target,
    /// `text` (for reviewers) or `json`.
    #[arg(long, default_value = "text")]
    pub output: String,
    /// Exit 0 when nothing would change, 1 on an error or a refusal (of the plan, or of an
    /// object by the API server's dry run), 2 when the plan has steps or a layer (CNI, addons,
    /// GitOps) would change (as `terraform plan -detailed-exitcode`).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// The namespace where the in-cluster agent keeps its journal (ConfigMap vixen-state).
    #[arg(long, default_value = "vixen-system")]
    pub namespace: String,
    /// As `vixen agent --drift` (default: cluster.yaml's `drift:`).
    #[arg(long, value_enum)]
    pub drift: Option<DriftArg>,
}

/// What the layers above the nodes (CNI, addons, GitOps) would do.
enum Layers {
    /// The repo has none.
    None,
    /// No Kubernetes API answered (before bootstrap): not previewed.
    NoApi,
    /// Set by set: the preview, or why there is none.
    Previewed(Vec<(&'static str, Result<vixen_k8s::SetPreview, String>)>),
}

impl Layers {
    /// One line per set, for reviewers.
    fn lines(&self) -> Vec<String> {
        match self {
            Layers::None => Vec::new(),
            Layers::NoApi => vec!["layers: not previewed (no Kubernetes API answered)".into()],
            Layers::Previewed(sets) => sets
                .iter()
                .map(|(set, p)| match p {
                    Ok(p) => p.summary(set),
                    Err(why) => format!("{set}: not previewed: {why}"),
                })
                .collect(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Layers::None => serde_json::Value::Null,
            Layers::NoApi => serde_json::json!({"error": "no Kubernetes API answered"}),
            Layers::Previewed(sets) => sets
                .iter()
                .map(|(set, p)| match p {
                    Ok(p) => serde_json::json!({
                        "set": set, "create": p.create, "change": p.change, "prune": p.prune,
                        "waiting": p.waiting, "refused": p.refused, "unchanged": p.unchanged,
                    }),
                    Err(why) => serde_json::json!({"set": set, "error": why}),
                })
                .collect(),
        }
    }
}

/// Where the plan's record of the cluster came from.
struct Source {
    what: String,
    nodes: usize,
}

pub fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    // A path the user named must be there: an empty record would plan every node from scratch.
    for (flag, path) in [("--lab", &args.target.lab), ("--state", &args.target.state)] {
        if let Some(p) = path
            && !p.is_dir()
        {
            anyhow::bail!(
                "{flag} {}: no such folder; nothing was read (give the folder `vixen lab up --dir` \
                 or `vixen agent --state` used, or leave {flag} out)",
                p.display()
            );
        }
    }
    let p = args
        .target
        .prepare_dir(&args.target.repo)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.stage, e.error))?;
    let layer_sets = daemon::layers::layer_sets(&p);
    let mut w = Wired::from_prepared(p, FileStore::in_dir(&args.target.state_dir()));
    DriftArg::apply(args.drift, &mut w.desired);
    let control_planes: Vec<String> = w
        .desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::Controlplane)
        .flat_map(|n| n.management_addresses.iter().cloned())
        .collect();
    let state_dir = args.target.state_dir();
    let (preview, source, layers) = super::agent::runtime()?.block_on(async {
        let client = w.kube.client(&control_planes).await;
        let journal = match client.clone() {
            // Read only: a journal that is not leading refuses every write.
            Some(client) => {
                let (_never, leading) = tokio::sync::watch::channel(false);
                let journal =
                    vixen_k8s::Journal::new(client, &args.namespace, JOURNAL, Some(leading));
                match journal.load().await {
                    Ok(Some(_)) => Ok(KubeStore::new(journal)),
                    Ok(None) => Err(format!(
                        "no ConfigMap {}/{JOURNAL} (no in-cluster agent yet)",
                        args.namespace
                    )),
                    Err(e) => Err(format!("ConfigMap {}/{JOURNAL}: {e}", args.namespace)),
                }
            }
            None => Err("no Kubernetes API answered".to_string()),
        };
        let (store, what) = match &journal {
            Ok(k) => (
                AgentStore::Kube(k),
                format!(
                    "ConfigMap {}/{JOURNAL} (the in-cluster agent's journal)",
                    args.namespace
                ),
            ),
            Err(why) => (
                AgentStore::File(&w.store),
                format!("local state {} ({why})", state_dir.display()),
            ),
        };
        let nodes = store.load().await?.inventory.nodes.len();
        let engine = Engine {
            talos: &w.talos,
            kube: &w.kube,
            store: &store,
            timeouts: Timeouts::default(),
            progress: &Quiet,
            backup: w
                .backup
                .as_ref()
                .map(|b| b as &dyn vixen_engine::SnapshotSink),
        };
        let preview = engine.plan_only(&w.desired, &w.configs).await?;
        let layers = match client {
            _ if layer_sets.is_empty() => Layers::None,
            None => Layers::NoApi,
            Some(client) => Layers::Previewed(daemon::layers::preview(&layer_sets, client).await),
        };
        anyhow::Ok((preview, Source { what, nodes }, layers))
    })?;
    let layers_change = match &layers {
        Layers::Previewed(sets) => sets
            .iter()
            .any(|(_, p)| p.as_ref().is_ok_and(|p| !p.is_empty())),
        _ => false,
    };
    let changes = layers_change || matches!(&preview.plan, Ok(p) if !p.steps.is_empty());
    // A set the API server would refuse, or could not be read: the apply would fail too.
    let refused = preview.plan.is_err()
        || matches!(&layers, Layers::Previewed(sets)
            if sets.iter().any(|(_, p)| p.as_ref().map_or(true, |p| !p.refused.is_empty())));
    if args.output == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&json(&preview, &source, &layers))?
        );
    } else {
        print_text(&preview, &source);
        for line in layers.lines() {
            println!("{line}");
        }
    }
    Ok(match (refused, changes, args.detailed_exitcode) {
        (true, _, _) => ExitCode::FAILURE,
        (false, true, true) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    })
}

fn print_text(p: &Preview, source: &Source) {
    println!(
        "state: {}: {} node{} on record",
        source.what,
        source.nodes,
        plural(source.nodes)
    );
    if p.adopted > 0 {
        println!(
            "adopted: {} node{} without a record run exactly their Git config (dry run)",
            p.adopted,
            plural(p.adopted)
        );
    }
    for d in &p.drift {
        println!(
            "drift: {} runs a config that is not the one from Git (Talos' dry run)",
            d.node
        );
    }
    let plan = match &p.plan {
        Ok(plan) => plan,
        Err(refusal) => {
            eprintln!("refused: {refusal}");
            return;
        }
    };
    if plan.steps.is_empty() {
        println!("no changes: the cluster matches Git");
    }
    for (i, s) in plan.steps.iter().enumerate() {
        println!("{:>3}. {s}", i + 1);
        match p.dry_runs.get(&i) {
            Some(Ok(details)) => {
                for line in redact(details).lines() {
                    println!("       {line}");
                }
            }
            Some(Err(e)) => println!("       (no dry run: {})", first_line(e)),
            None => {}
        }
    }
    for w in &plan.waiting {
        println!("waiting: {w}");
    }
    println!("{}", summary(plan));
}

fn json(p: &Preview, source: &Source, layers: &Layers) -> serde_json::Value {
    let (plan, refused) = match &p.plan {
        Ok(plan) => (Some(plan), None),
        Err(r) => (None, Some(r.to_string())),
    };
    serde_json::json!({
        "state": source.what,
        "recorded_nodes": source.nodes,
        "adopted": p.adopted,
        "drift": p.drift.iter().map(|d| &d.node).collect::<Vec<_>>(),
        "plan": plan,
        "refused": refused,
        "dry_runs": p.dry_runs.iter().map(|(i, r)| serde_json::json!({
            "step": i + 1,
            "details": r.as_ref().ok().map(|d| redact(d)),
            "error": r.as_ref().err().map(|e| first_line(e)),
        })).collect::<Vec<_>>(),
        "summary": plan.map(summary),
        "layers": layers.json(),
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `3 steps: 2 reboots, 1 reset, 0 etcd changes`: a step that resets reboots too, and is
/// counted as a reset only.
pub fn summary(plan: &Plan) -> String {
    let n = |f: fn(&Step) -> bool| plan.steps.iter().filter(|s| f(s)).count();
    let reboots = n(|s| s.risk.reboot && !s.risk.reset);
    let resets = n(|s| s.risk.reset);
    let etcd = n(|s| s.risk.etcd);
    format!(
        "{}: {}, {}, {}",
        count(plan.steps.len(), "step", "steps"),
        count(reboots, "reboot", "reboots"),
        count(resets, "reset", "resets"),
        count(etcd, "etcd change", "etcd changes"),
    )
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// Talos' diff holds the machine config as it is, keys and tokens included: their values are
/// hidden (a reviewer sees that they change, not what they are).
pub fn redact(details: &str) -> String {
    const SECRET: &[&str] = &["key", "token", "secret", "password"];
    let mut out = String::with_capacity(details.len());
    let mut in_block = false;
    for line in details.lines() {
        let (mark, body) = match line.chars().next() {
            Some(c @ ('+' | '-' | ' '))
                if !line.starts_with("--- ") && !line.starts_with("+++ ") =>
            {
                (c.to_string(), &line[1..])
            }
            _ => (String::new(), line),
        };
        let trimmed = body.trim_start().trim_start_matches("- ");
        if in_block {
            // The rest of a multi-line secret value (`key: |`): indented deeper.
            if body.starts_with("      ") || trimmed.is_empty() {
                continue;
            }
            in_block = false;
        }
        let secret = trimmed.split_once(':').is_some_and(|(k, v)| {
            let k = k.to_ascii_lowercase();
            !k.contains(' ') && SECRET.iter().any(|s| k.contains(s)) && !v.trim().is_empty()
        });
        if trimmed.contains("-----BEGIN") || secret {
            let indent = &body[..body.len() - body.trim_start().len()];
            let key = trimmed.split_once(':').map_or("", |(k, _)| k);
            out.push_str(&format!("{mark}{indent}{key}: (hidden)\n"));
            in_block = trimmed.ends_with('|') || trimmed.ends_with('>');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vixen_plan::{Action, Risk};

    fn step(reboot: bool, reset: bool, etcd: bool) -> Step {
        Step {
            node: "n".into(),
            action: Action::Reboot,
            reason: String::new(),
            risk: Risk {
                reboot,
                reset,
                etcd,
            },
        }
    }

    #[test]
    fn the_summary_counts_with_plurals() {
        let plan = Plan {
            steps: vec![
                step(true, false, false),
                step(true, false, false),
                step(true, true, false),
            ],
            waiting: vec![],
        };
        assert_eq!(
            summary(&plan),
            "3 steps: 2 reboots, 1 reset, 0 etcd changes"
        );
        let plan = Plan {
            steps: vec![step(false, false, true)],
            waiting: vec![],
        };
        assert_eq!(summary(&plan), "1 step: 0 reboots, 0 resets, 1 etcd change");
        assert_eq!(
            summary(&Plan::default()),
            "0 steps: 0 reboots, 0 resets, 0 etcd changes"
        );
    }

    #[test]
    fn secret_values_in_a_diff_are_hidden() {
        let diff = "Config diff:\n\n--- a\n+++ b\n@@ -1,4 +1,4 @@\n machine:\n-  token: abc.def\n+  token: ghi.jkl\n   ca:\n     crt: LS0tCRT\n-    key: LS0tOLD\n+    key: LS0tNEW\n   nodeLabels:\n-    pool: general\n+    pool: batch\n";
        let out = redact(diff);
        for secret in ["abc.def", "ghi.jkl", "LS0tOLD", "LS0tNEW"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("-  token: (hidden)"), "{out}");
        assert!(out.contains("+    key: (hidden)"), "{out}");
        assert!(
            out.contains("-    pool: general\n+    pool: batch"),
            "{out}"
        );
        assert!(out.contains("     crt: LS0tCRT"), "{out}");
        assert!(out.starts_with("Config diff:\n\n--- a\n+++ b\n"), "{out}");
    }
}
