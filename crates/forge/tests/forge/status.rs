//! Commit statuses against a fake forge: request shape per forge, retries, rate limits, dedup.

use std::time::{Duration, Instant};

use serde_json::json;
use vixen_forge::{
    CommitState, CommitStatus, Forge, Posted, RetryPolicy, Secret, StatusClient, StatusError,
    context_for,
};

use crate::mock::MockForge;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "tok-SECRET-123";

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_rate_limit_wait: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
    }
}

fn client(forge: Forge, base: &str, repo: &str) -> StatusClient {
    StatusClient::new(
        forge,
        base,
        repo,
        Secret::new(TOKEN),
        context_for("prod"),
        fast(),
    )
    .unwrap()
}

fn status(state: CommitState, description: &str) -> CommitStatus {
    CommitStatus {
        state,
        description: description.into(),
        target_url: Some("https://vixen.example/prod".into()),
    }
}

#[tokio::test]
async fn github_request_shape_and_description_cut() {
    let forge = MockForge::start().await;
    let c = client(Forge::GitHub, &forge.base, "acme/infra");
    let long = "x".repeat(300);
    assert_eq!(
        c.post(SHA, &status(CommitState::Pending, &long))
            .await
            .unwrap(),
        Posted::Sent { attempts: 1 }
    );
    let r = &forge.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/repos/acme/infra/statuses/{SHA}"));
    assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(r.body["state"], "pending");
    assert_eq!(r.body["context"], "vixen/prod");
    assert_eq!(r.body["target_url"], "https://vixen.example/prod");
    assert_eq!(r.body["description"].as_str().unwrap().chars().count(), 140);
}

#[tokio::test]
async fn gitea_and_forgejo_request_shape() {
    for f in [Forge::Gitea, Forge::Forgejo] {
        let forge = MockForge::start().await;
        let c = client(f, &format!("{}/", forge.base), "acme/infra");
        c.post(
            SHA,
            &status(CommitState::Failure, "plan rejected: 2 errors"),
        )
        .await
        .unwrap();
        c.post(SHA, &status(CommitState::Error, "cluster unreachable"))
            .await
            .unwrap();
        let r = forge.requests();
        assert_eq!(
            r[0].path,
            format!("/api/v1/repos/acme/infra/statuses/{SHA}")
        );
        assert_eq!(r[0].headers["authorization"], format!("token {TOKEN}"));
        assert_eq!(
            r[0].body,
            json!({"state": "failure", "context": "vixen/prod", "description": "plan rejected: 2 errors", "target_url": "https://vixen.example/prod"})
        );
        assert_eq!(r[1].body["state"], "error");
    }
}

#[tokio::test]
async fn gitlab_request_shape() {
    let forge = MockForge::start().await;
    let c = client(
        Forge::GitLab,
        &format!("{}/api/v4", forge.base),
        "group/sub/infra",
    );
    c.post(SHA, &status(CommitState::Pending, "applying"))
        .await
        .unwrap();
    c.post(SHA, &status(CommitState::Success, "applied to 3 nodes"))
        .await
        .unwrap();
    c.post(SHA, &status(CommitState::Failure, "failed"))
        .await
        .unwrap();
    let r = forge.requests();
    assert_eq!(
        r[0].path,
        format!("/api/v4/projects/group%2Fsub%2Finfra/statuses/{SHA}")
    );
    assert_eq!(r[0].headers["private-token"], TOKEN);
    assert!(r[0].headers.get("authorization").is_none());
    assert_eq!(r[0].body["state"], "running");
    assert_eq!(r[0].body["name"], "vixen/prod");
    assert_eq!(r[1].body["state"], "success");
    assert_eq!(r[2].body["state"], "failed");
}

#[tokio::test]
async fn server_error_is_retried_then_succeeds() {
    let forge = MockForge::start().await;
    forge.answer(503, &[]);
    forge.answer(500, &[]);
    let c = client(Forge::GitHub, &forge.base, "acme/infra");
    assert_eq!(
        c.post(SHA, &status(CommitState::Success, "ok"))
            .await
            .unwrap(),
        Posted::Sent { attempts: 3 }
    );
    assert_eq!(forge.requests().len(), 3);

    for _ in 0..3 {
        forge.answer(502, &[]);
    }
    let err = c
        .post(SHA, &status(CommitState::Failure, "no"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StatusError::Server {
                status: 502,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let forge = MockForge::start().await;
    forge.answer(429, &[("retry-after", "1")]);
    let c = client(Forge::Gitea, &forge.base, "acme/infra");
    let t = Instant::now();
    assert_eq!(
        c.post(SHA, &status(CommitState::Pending, "start"))
            .await
            .unwrap(),
        Posted::Sent { attempts: 2 }
    );
    let r = forge.requests();
    assert!(
        r[1].at - r[0].at >= Duration::from_secs(1),
        "waited {:?}",
        r[1].at - r[0].at
    );
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn github_rate_limit_reset_and_cap() {
    let forge = MockForge::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset = (now + 3600).to_string();
    forge.answer(
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ],
    );
    let c = client(Forge::GitHub, &forge.base, "acme/infra");
    let t = Instant::now();
    let err = c
        .post(SHA, &status(CommitState::Pending, "start"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StatusError::RateLimited { retry_after } if retry_after > Duration::from_secs(3000)),
        "{err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a wait over the cap is not slept"
    );
    assert_eq!(forge.requests().len(), 1);
}

#[tokio::test]
async fn refusal_is_not_retried_and_never_shows_the_token() {
    let forge = MockForge::start().await;
    forge.answer(403, &[]);
    let c = client(Forge::GitHub, &forge.base, "acme/infra");
    let err = c
        .post(SHA, &status(CommitState::Pending, "start"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StatusError::Rejected { status: 403, .. }),
        "{err:?}"
    );
    assert_eq!(forge.requests().len(), 1);
    for shown in [format!("{err}"), format!("{err:?}"), format!("{c:?}")] {
        assert!(!shown.contains(TOKEN), "{shown}");
    }
    // Network errors: nothing listens on the port of a stopped server.
    let base = forge.base.clone();
    drop(forge);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = client(Forge::GitHub, &base, "acme/infra");
    let err = c
        .post(SHA, &status(CommitState::Pending, "start"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StatusError::Network { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains(TOKEN));
}

#[tokio::test]
async fn same_status_is_posted_once() {
    let forge = MockForge::start().await;
    let c = client(Forge::GitHub, &forge.base, "acme/infra");
    let s = status(CommitState::Pending, "applying");
    assert_eq!(c.post(SHA, &s).await.unwrap(), Posted::Sent { attempts: 1 });
    assert_eq!(c.post(SHA, &s).await.unwrap(), Posted::Unchanged);
    assert_eq!(forge.requests().len(), 1);
    c.post(SHA, &status(CommitState::Pending, "applying: node 2/3"))
        .await
        .unwrap();
    let other = "1123456789abcdef0123456789abcdef01234567";
    c.post(other, &s).await.unwrap();
    assert_eq!(forge.requests().len(), 3);

    // A failed post is not remembered: the next one is sent.
    forge.answer(422, &[]);
    let done = status(CommitState::Success, "applied");
    assert!(c.post(SHA, &done).await.is_err());
    assert_eq!(
        c.post(SHA, &done).await.unwrap(),
        Posted::Sent { attempts: 1 }
    );
}
