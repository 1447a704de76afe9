//! The status queue against a fake forge: a reconcile never waits for the forge, failures are
//! retried in the background and land once, a full queue drops the oldest status of the commit,
//! and identical statuses are not posted again, also by a fresh queue after a restart.

use std::time::Duration;

use vixen_forge::{
    CommitState, CommitStatus, Forge, QueueStats, RetryPolicy, Secret, StatusClient, StatusQueue,
    context_for,
};

use crate::mock::MockForge;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const OTHER: &str = "fedcba9876543210fedcba9876543210fedcba98";
const TOKEN: &str = "tok-SECRET-123";

fn client(forge: Forge, base: &str, repo: &str) -> StatusClient {
    let retry = RetryPolicy {
        max_attempts: 6,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_rate_limit_wait: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
    };
    StatusClient::new(
        forge,
        base,
        repo,
        Secret::new(TOKEN),
        context_for("prod"),
        retry,
    )
    .unwrap()
}

fn status(state: CommitState, description: &str) -> CommitStatus {
    CommitStatus {
        state,
        description: description.into(),
        target_url: None,
    }
}

/// Waits for the queue to settle; the timeout only keeps a broken queue from hanging the run.
async fn drain(q: &StatusQueue) {
    tokio::time::timeout(Duration::from_secs(20), q.drain())
        .await
        .expect("the queue never settled");
}

/// Fault: a forge answering 500 held up the reconcile (~8 s per status, retried inline).
/// `post` is a plain function (no future to await), and on this single-threaded runtime the
/// worker cannot run before the test yields: the fake forge has seen nothing when `post`
/// returns. The status then lands exactly once after the 500s.
#[tokio::test]
async fn post_never_waits_and_a_failing_status_lands_once() {
    let forge = MockForge::start().await;
    for _ in 0..3 {
        forge.answer_body(500, r#"{"message":"database is locked","url":"https://x"}"#);
    }
    let q = StatusQueue::start(client(Forge::Gitea, &forge.base, "acme/infra"), 16);
    q.post(SHA, status(CommitState::Success, "applied in 2 steps"))
        .unwrap();
    assert!(
        forge.requests().is_empty(),
        "post() returned after talking to the forge"
    );
    assert_eq!(q.waiting(), 1);
    drain(&q).await;

    let posts = forge.posts();
    assert_eq!(posts.len(), 4, "3 answers 500, then 201: {posts:?}");
    let landed = forge.accepted();
    assert_eq!(landed.len(), 1, "{landed:?}");
    assert_eq!(landed[0]["state"], "success");
    assert_eq!(landed[0]["description"], "applied in 2 steps");
    assert_eq!(
        q.stats(),
        QueueStats {
            posted: 1,
            ..QueueStats::default()
        }
    );
    // The commit's statuses were read once, before its first status.
    let r = forge.requests();
    assert_eq!(r[0].method, "GET");
    assert_eq!(
        r[0].path,
        format!("/api/v1/repos/acme/infra/statuses/{SHA}")
    );
    assert_eq!(r.iter().filter(|r| r.method == "GET").count(), 1);
}

/// Fault: a refused status was silent, or showed only an HTTP code. The forge's own message is
/// kept (cut, token redacted) and the status counted as failed.
#[tokio::test]
async fn a_refusal_keeps_the_forges_message_and_never_the_token() {
    let forge = MockForge::start().await;
    let said = format!(
        r#"{{"message":"Validation Failed for token {TOKEN}: description is too long (maximum is 140 characters)","errors":[]}}"#
    );
    forge.answer_body(422, &said);
    let q = StatusQueue::start(client(Forge::GitHub, &forge.base, "acme/infra"), 16);
    q.post(SHA, status(CommitState::Failure, "validate failed"))
        .unwrap();
    drain(&q).await;
    assert_eq!(q.stats().failed, 1);
    assert_eq!(forge.posts().len(), 1, "a 422 is not retried");
    let err = q.last_error().expect("the failure is kept");
    assert!(err.contains("maximum is 140 characters"), "{err}");
    assert!(err.contains("422"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    assert!(!format!("{q:?}").contains(TOKEN));
}

/// Fault: an unbounded queue grows while the forge is down, or a full one blocks the reconcile.
/// With room for 2, a third status drops the oldest waiting status of the same commit.
#[tokio::test]
async fn a_full_queue_drops_the_oldest_status_of_the_commit() {
    let forge = MockForge::start().await;
    let q = StatusQueue::start(client(Forge::GitHub, &forge.base, "acme/infra"), 2);
    q.post(SHA, status(CommitState::Pending, "upgrading cp-1 (1/3)"))
        .unwrap();
    q.post(OTHER, status(CommitState::Pending, "other commit"))
        .unwrap();
    q.post(SHA, status(CommitState::Pending, "upgrading cp-2 (2/3)"))
        .unwrap();
    assert_eq!(q.waiting(), 2);
    assert_eq!(q.stats().dropped, 1);
    drain(&q).await;
    let sent: Vec<String> = forge
        .accepted()
        .iter()
        .map(|b| b["description"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent, ["other commit", "upgrading cp-2 (2/3)"]);
    assert_eq!(q.stats().posted, 2);
}

/// Fault: every resync re-posted "applied in 0 steps", and a restarted agent did too. The same
/// (commit, context, state, description) is posted once; a fresh queue (a restart) reads the
/// commit's statuses first and posts nothing; a changed description is posted. For each forge,
/// since each lists statuses in its own shape, and with a description over GitHub's limit (what
/// the forge holds is the cut text).
#[tokio::test]
async fn identical_statuses_are_posted_once_even_across_a_restart() {
    let long = format!("applied in 0 steps; {}", "n".repeat(200));
    for (forge_kind, base_suffix, repo) in [
        (Forge::GitHub, "", "acme/infra"),
        (Forge::Gitea, "", "acme/infra"),
        (Forge::Forgejo, "", "acme/infra"),
        (Forge::GitLab, "/api/v4", "group/infra"),
    ] {
        let forge = MockForge::start().await;
        let base = format!("{}{base_suffix}", forge.base);
        let first = StatusQueue::start(client(forge_kind, &base, repo), 16);
        for state in [CommitState::Pending, CommitState::Success] {
            let s = status(state, &long);
            first.post(SHA, s.clone()).unwrap();
            first.post(SHA, s).unwrap();
            drain(&first).await;
        }
        assert_eq!(
            (first.stats().posted, first.stats().deduplicated),
            (2, 2),
            "{forge_kind}"
        );
        drop(first);

        let restarted = StatusQueue::start(client(forge_kind, &base, repo), 16);
        restarted
            .post(SHA, status(CommitState::Success, &long))
            .unwrap();
        drain(&restarted).await;
        assert_eq!(
            restarted.stats(),
            QueueStats {
                deduplicated: 1,
                ..QueueStats::default()
            },
            "{forge_kind}: the restarted queue posted again"
        );
        assert_eq!(forge.posts().len(), 2, "{forge_kind}");
        restarted
            .post(SHA, status(CommitState::Success, "applied in 1 step"))
            .unwrap();
        drain(&restarted).await;
        assert_eq!(restarted.stats().posted, 1, "{forge_kind}");
        assert_eq!(forge.posts().len(), 3, "{forge_kind}");
    }
}
