//! What the user reads about one commit: the engine's outcome (or why the checkout could not be
//! prepared) as one verdict, the same everywhere the user looks.
//!
//! ```text
//!  Result<Outcome, EngineError> ─► verdict()         ─┐
//!  PrepareError (stage, summary) ─► prepare_verdict() ─┼─► Verdict { label, phase, commit_state,
//!                                                      │            reason, message }
//!                                                      └─► commit status (cut to the forge's
//!                                                          limit), VixenCluster message and
//!                                                          conditions, Event, `vixen status`
//! ```
//!
//! The message leads with the reason (a forge cuts the tail: GitHub keeps 140 characters): the
//! first problem as `file:line:col: message (fix: ...)`, the step that failed and why, or what
//! the rollout waits on. It never names the checkout folder (the agent's local path) and holds
//! no secret: the engine's errors carry names, addresses and versions only, and the repo's
//! diagnostics are relative to the repo root.

use std::path::Path;

use vixen_engine::{EngineError, Outcome};
use vixen_forge::CommitState;
use vixen_k8s::Phase;
use vixen_plan::{ActionKind, Step};

use super::PrepareError;

/// How one commit ended, for every place the user looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Metrics label (`converged`, `waiting`, `refused`, `failed`, `error`, `invalid`).
    pub label: &'static str,
    /// The VixenCluster phase.
    pub phase: Phase,
    /// The commit status.
    pub commit_state: CommitState,
    /// The condition and Event reason (CamelCase).
    pub reason: &'static str,
    /// What happened and why, reason first.
    pub message: String,
    /// The failure category for `vixen_reconcile_failures_total`, if it failed.
    pub failure: Option<&'static str>,
}

fn short(rev: &str) -> &str {
    if rev.len() == 40 { &rev[..12] } else { rev }
}

fn steps(n: usize) -> String {
    if n == 1 {
        "1 step".into()
    } else {
        format!("{n} steps")
    }
}

/// The first non-empty line, trimmed.
fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// `text` without the checkout folder `root`: paths under it become relative to the repo.
pub fn scrub(text: &str, root: &Path) -> String {
    let root = root.to_string_lossy();
    let root = root.trim_end_matches('/');
    if root.is_empty() || root == "." {
        return text.to_owned();
    }
    text.replace(&format!("{root}/"), "")
        .replace(root, "the repo")
}

/// The engine's outcome for `revision`.
pub fn verdict(outcome: &Result<Outcome, EngineError>, revision: &str) -> Verdict {
    match outcome {
        Ok(Outcome::Converged { steps: n }) => Verdict {
            label: "converged",
            phase: Phase::Ready,
            commit_state: CommitState::Success,
            reason: "Applied",
            message: format!(
                "applied in {}; the cluster matches {}",
                steps(*n),
                short(revision)
            ),
            failure: None,
        },
        Ok(Outcome::Waiting { steps: n, waiting }) => Verdict {
            label: "waiting",
            phase: Phase::Waiting,
            commit_state: CommitState::Pending,
            reason: "Waiting",
            message: format!(
                "waiting on {} ({} done)",
                waiting.first().map_or("nodes", |w| first_line(w)),
                steps(*n)
            ),
            failure: None,
        },
        Ok(Outcome::Refused(r)) => Verdict {
            label: "refused",
            phase: Phase::Refused,
            commit_state: CommitState::Failure,
            reason: "Refused",
            message: format!("refused, nothing changed: {}", first_line(&r.to_string())),
            failure: Some("refused"),
        },
        Ok(Outcome::Failed { steps: n, error }) => Verdict {
            label: "failed",
            phase: Phase::Failed,
            commit_state: CommitState::Failure,
            reason: "StepFailed",
            message: format!(
                "{} {} failed (step {}): {}; {} done before it",
                error.node,
                first_line(&error.action),
                error.index + 1,
                first_line(&error.source.to_string()),
                steps(*n)
            ),
            failure: Some(error.source.category()),
        },
        Err(e) => Verdict {
            label: "error",
            phase: Phase::Error,
            commit_state: CommitState::Error,
            reason: "StateStoreError",
            message: format!("vixen state store: {}", first_line(&e.to_string())),
            failure: Some("store"),
        },
    }
}

/// Why the checkout at `checkout` could not be prepared (the commit itself is at fault).
pub fn prepare_verdict(e: &PrepareError, checkout: &Path) -> Verdict {
    let summary = if e.summary.trim().is_empty() {
        format!("{:#}", e.error)
    } else {
        e.summary.clone()
    };
    Verdict {
        label: "invalid",
        phase: Phase::Failed,
        commit_state: CommitState::Failure,
        reason: "InvalidRepo",
        message: format!(
            "{} failed, nothing changed: {}",
            e.stage,
            scrub(first_line(&summary), checkout)
        ),
        failure: Some(e.stage),
    }
}

/// The pending status while step `index` of `total` runs: `upgrading cp-2 (3/5)`.
pub fn running(index: usize, total: usize, step: &Step) -> String {
    let verb = match step.action.kind() {
        ActionKind::ApplyConfig => "applying the config to",
        ActionKind::WaitReady => "waiting for",
        ActionKind::WaitEtcdMember => "waiting for the etcd member of",
        ActionKind::ForfeitLeadership => "moving etcd leadership off",
        ActionKind::LeaveEtcd => "removing from etcd",
        ActionKind::RemoveMember => "removing the etcd member of",
        ActionKind::CheckMembers => "checking etcd members from",
        ActionKind::Reset => "resetting",
        ActionKind::WaitMaintenance => "waiting for maintenance mode on",
        ActionKind::Upgrade | ActionKind::LifecycleUpgrade => "upgrading",
        ActionKind::PullImage => "pulling the installer image on",
        ActionKind::Reboot => "rebooting",
        ActionKind::CheckUpgradeSafe => "checking it is safe to upgrade",
        ActionKind::Stabilize => "letting settle",
        ActionKind::Drain => "draining",
        ActionKind::WaitNodeReady => "waiting for the Kubernetes node",
        ActionKind::WaitKubernetes => "waiting for the new kubelet on",
        ActionKind::Uncordon => "uncordoning",
        ActionKind::DeleteNode => "deleting the Kubernetes node",
        _ => "running a step on",
    };
    format!(
        "{verb} {} ({}/{})",
        step.node,
        index + 1,
        total.max(index + 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vixen_engine::{ExecError, StepError, StoreError};
    use vixen_plan::{Action, Refusal, Risk};

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    fn upgrade(node: &str) -> Step {
        Step {
            node: node.into(),
            action: Action::Upgrade {
                image: "ghcr.io/siderolabs/installer:v1.12.2".into(),
            },
            reason: "Talos v1.11.6 -> v1.12.2".into(),
            risk: Risk::default(),
        }
    }

    /// An outcome and the phase, commit state, reason and message it must give.
    type Case = (
        Result<Outcome, EngineError>,
        Phase,
        CommitState,
        &'static str,
        &'static str,
    );

    /// Each engine outcome: the phase, the commit state and a message that says why, first.
    #[test]
    fn each_outcome_reads_as_what_happened_and_why() {
        let cases: Vec<Case> = vec![
            (
                Ok(Outcome::Converged { steps: 1 }),
                Phase::Ready,
                CommitState::Success,
                "Applied",
                "applied in 1 step; the cluster matches 0123456789ab",
            ),
            (
                Ok(Outcome::Waiting {
                    steps: 2,
                    waiting: vec!["cp-2: etcd member cp-3 is not healthy".into()],
                }),
                Phase::Waiting,
                CommitState::Pending,
                "Waiting",
                "waiting on cp-2: etcd member cp-3 is not healthy (2 steps done)",
            ),
            (
                Ok(Outcome::Refused(Refusal::Quorum(
                    "removing cp-2 and cp-3 at once loses quorum".into(),
                ))),
                Phase::Refused,
                CommitState::Failure,
                "Refused",
                "refused, nothing changed: etcd: removing cp-2 and cp-3 at once loses quorum",
            ),
            (
                Ok(Outcome::Failed {
                    steps: 2,
                    error: ExecError {
                        index: 2,
                        node: "cp-2".into(),
                        action: "upgrade to ghcr.io/siderolabs/installer:v1.12.2".into(),
                        source: StepError::Gate("cp-2 did not come back within 600s".into()),
                    },
                }),
                Phase::Failed,
                CommitState::Failure,
                "StepFailed",
                "cp-2 upgrade to ghcr.io/siderolabs/installer:v1.12.2 failed (step 3): gave up \
                 waiting: cp-2 did not come back within 600s; 2 steps done before it",
            ),
            (
                Err(EngineError::Store(StoreError::Write("conflict".into()))),
                Phase::Error,
                CommitState::Error,
                "StateStoreError",
                "vixen state store: writing vixen's state: conflict",
            ),
        ];
        for (outcome, phase, state, reason, message) in cases {
            let v = verdict(&outcome, REV);
            assert_eq!(
                (v.phase, v.commit_state, v.reason, v.message.as_str()),
                (phase, state, reason, message),
                "{outcome:?}"
            );
        }
    }

    /// An unsafe step is a wait: pending, not a failure, and it names the node and why.
    #[test]
    fn an_unsafe_step_waits_and_says_on_what() {
        let v = verdict(
            &Ok(Outcome::Waiting {
                steps: 0,
                waiting: vec!["cp-1: etcd has 2 of 3 members healthy\nmore".into()],
            }),
            REV,
        );
        assert_eq!(v.commit_state, CommitState::Pending);
        assert_eq!(
            v.message,
            "waiting on cp-1: etcd has 2 of 3 members healthy (0 steps done)"
        );
        assert_eq!(v.failure, None);
    }

    /// An invalid repo: the first problem's file:line:col and fix, without the checkout folder.
    #[test]
    fn an_invalid_repo_names_file_line_and_fix_but_not_the_checkout() {
        let checkout = Path::new("/tmp/x/lab/vixen/git/checkouts/0123456789ab");
        let e = PrepareError {
            stage: "validate",
            error: anyhow::anyhow!("the repo is not valid; nothing was changed:\n..."),
            summary: format!(
                "{}/nodes/cp-4.yaml:3:7: 4 control planes: etcd needs an odd count (fix: remove \
                 one or add one) (and 1 more problem)\nsecond line",
                checkout.display()
            ),
        };
        let v = prepare_verdict(&e, checkout);
        assert_eq!(
            (v.phase, v.commit_state, v.reason),
            (Phase::Failed, CommitState::Failure, "InvalidRepo")
        );
        assert_eq!(
            v.message,
            "validate failed, nothing changed: nodes/cp-4.yaml:3:7: 4 control planes: etcd needs \
             an odd count (fix: remove one or add one) (and 1 more problem)"
        );
        assert!(!v.message.contains("/tmp") && !v.message.contains("checkouts"));
        // GitHub keeps 140 characters: the file, line and column come first and survive.
        let cut = vixen_forge::fit_description(vixen_forge::Forge::GitHub, &v.message);
        assert!(cut.contains("nodes/cp-4.yaml:3:7"), "{cut}");
    }

    /// Without a summary, the error's first line still reaches the user, scrubbed.
    #[test]
    fn a_decrypt_failure_without_summary_uses_the_error_scrubbed() {
        let checkout = Path::new("/work/ck/abc");
        let e = PrepareError {
            stage: "decrypt",
            error: anyhow::anyhow!("/work/ck/abc/secrets.sops.yaml: no age key matches"),
            summary: String::new(),
        };
        assert_eq!(
            prepare_verdict(&e, checkout).message,
            "decrypt failed, nothing changed: secrets.sops.yaml: no age key matches"
        );
        assert_eq!(scrub("at /work/ck/abc", checkout), "at the repo");
    }

    /// Pending statuses name the step that runs.
    #[test]
    fn a_running_step_reads_as_verb_node_and_number() {
        assert_eq!(running(2, 5, &upgrade("cp-2")), "upgrading cp-2 (3/5)");
    }
}
