//! Commit statuses on GitHub, Gitea/Forgejo and GitLab, with bounded retries, rate-limit
//! handling and de-duplication.
//!
//! | forge | request | auth | states (vixen Pending/Success/Failure/Error) |
//! |---|---|---|---|
//! | GitHub | `POST {base}/repos/{owner}/{repo}/statuses/{sha}` | `Authorization: Bearer` | pending/success/failure/error |
//! | Gitea, Forgejo | `POST {base}/api/v1/repos/{owner}/{repo}/statuses/{sha}` | `Authorization: token` | pending/success/failure/error |
//! | GitLab | `POST {base}/projects/{id}/statuses/{sha}` (base ends in `/api/v4`) | `PRIVATE-TOKEN` | running/success/failed/failed |
//!
//! 5xx answers and network errors are retried with exponential backoff; 429, and 403 carrying
//! rate-limit headers, wait for `Retry-After` or the reset time, up to a cap. A status equal to
//! the last one posted for the same commit and context is not sent again; [`StatusClient::seed`]
//! reads the commit's current statuses from the forge so that this holds across a restart too:
//!
//! | forge | list a commit's statuses | state field |
//! |---|---|---|
//! | GitHub | `GET {base}/repos/{owner}/{repo}/commits/{sha}/statuses` | `state` |
//! | Gitea, Forgejo | `GET {base}/api/v1/repos/{owner}/{repo}/statuses/{sha}` | `status` |
//! | GitLab | `GET {base}/projects/{id}/repository/commits/{sha}/statuses` | `status` |
//!
//! The latest status of a context is the one with the highest `id` (all three number statuses in
//! creation order; Gitea's `modules/structs/status.go` names the state `status` in answers, as
//! GitLab's `lib/api/commit_statuses.rb` does).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};

use crate::text::{fit_description, forge_message};
use crate::{Forge, Secret};

/// vixen's view of a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommitState {
    /// vixen started on the commit.
    Pending,
    /// Applied.
    Success,
    /// The commit cannot be applied (invalid repo, untrusted signature, failed rollout).
    Failure,
    /// vixen itself failed (cluster unreachable, internal error).
    Error,
}

impl CommitState {
    /// The state's name in `forge`'s API.
    pub fn api_name(self, forge: Forge) -> &'static str {
        match (forge, self) {
            (Forge::GitLab, Self::Pending) => "running",
            (Forge::GitLab, Self::Failure | Self::Error) => "failed",
            (_, Self::Pending) => "pending",
            (_, Self::Success) => "success",
            (_, Self::Failure) => "failure",
            (_, Self::Error) => "error",
        }
    }
}

/// One status to post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitStatus {
    /// State.
    pub state: CommitState,
    /// A short description; cut to the forge's limit (140 characters on GitHub).
    pub description: String,
    /// A link shown next to the status.
    pub target_url: Option<String>,
}

/// What [`StatusClient::post`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// The forge accepted the status after this many attempts.
    Sent {
        /// Attempts made (1 = first try).
        attempts: u32,
    },
    /// Same state and description as the last status posted for this commit and context.
    Unchanged,
}

/// Retry and rate-limit limits.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    /// Backoff after the first failure; doubled each time.
    pub initial_backoff: Duration,
    /// Backoff ceiling.
    pub max_backoff: Duration,
    /// Longest wait for a rate limit; a longer one fails with [`StatusError::RateLimited`].
    pub max_rate_limit_wait: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_rate_limit_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// Why a status was not posted. Never contains the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The client cannot be built from this configuration.
    #[error("invalid commit status configuration: {0}")]
    InvalidConfig(String),
    /// Network errors on every attempt.
    #[error("commit status not sent after {attempts} attempts: {reason}")]
    Network {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// 5xx on every attempt.
    #[error("forge answered {status} after {attempts} attempts: {message}")]
    Server {
        /// Last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The forge's own message (its answer's `message` field), at most 200 characters.
        message: String,
    },
    /// Rate limited for longer than allowed, or on every attempt.
    #[error("rate limited by the forge; retry in {}s", retry_after.as_secs())]
    RateLimited {
        /// How long the forge asked to wait.
        retry_after: Duration,
    },
    /// The forge refused the request (401, 403, 404, 422, ...): retrying will not help.
    #[error("forge refused the commit status with {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The forge's own message (its answer's `message` field), at most 200 characters.
        message: String,
    },
}

/// Posts commit statuses for one repository on one forge under one context.
pub struct StatusClient {
    http: reqwest::Client,
    forge: Forge,
    base_url: String,
    repo: String,
    token: Secret,
    context: String,
    retry: RetryPolicy,
    last: Mutex<Memory>,
}

/// What the forge holds for a commit under this client's context, as the forge spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Remembered {
    state: String,
    description: String,
}

/// The last status of the most recent commits (bounded: old commits are forgotten first).
#[derive(Default)]
struct Memory {
    by_sha: HashMap<String, Option<Remembered>>,
    order: VecDeque<String>,
}

impl Memory {
    const MAX: usize = 512;

    fn insert(&mut self, sha: &str, value: Option<Remembered>) {
        if self.by_sha.insert(sha.to_owned(), value).is_none() {
            self.order.push_back(sha.to_owned());
            while self.order.len() > Self::MAX {
                if let Some(old) = self.order.pop_front() {
                    self.by_sha.remove(&old);
                }
            }
        }
    }
}

/// One request's outcome, for a caller that does its own retrying.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Accepted.
    Sent,
    /// Worth retrying: after `wait` when the forge said how long.
    Retry {
        wait: Option<Duration>,
        error: StatusError,
    },
    /// Retrying will not help.
    Fatal(StatusError),
}

impl std::fmt::Debug for StatusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusClient")
            .field("forge", &self.forge)
            .field("base_url", &self.base_url)
            .field("repo", &self.repo)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// The status context vixen uses for a cluster: `vixen/<cluster>`.
pub fn context_for(cluster: &str) -> String {
    format!("vixen/{cluster}")
}

impl StatusClient {
    /// `base_url`: `https://api.github.com` (GitHub Enterprise: `https://HOST/api/v3`), the Gitea
    /// or Forgejo root URL, or GitLab's API root (`https://gitlab.com/api/v4`). `repo`: `owner/name`;
    /// for GitLab the project path or numeric id.
    ///
    /// # Errors
    /// [`StatusError::InvalidConfig`] for an empty token or a malformed repo.
    pub fn new(
        forge: Forge,
        base_url: &str,
        repo: &str,
        token: Secret,
        context: String,
        retry: RetryPolicy,
    ) -> Result<Self, StatusError> {
        if token.expose().is_empty() {
            return Err(StatusError::InvalidConfig("empty token".into()));
        }
        let parts = repo.split('/').filter(|p| !p.is_empty()).count();
        let repo_ok = match forge {
            Forge::GitLab => parts >= 1,
            _ => parts == 2 && repo.split('/').count() == 2,
        };
        if !repo_ok || repo.contains(['?', '#', ' ']) {
            return Err(StatusError::InvalidConfig(format!(
                "bad repository {repo:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(retry.request_timeout)
            .user_agent(concat!("vixen/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StatusError::InvalidConfig(e.to_string()))?;
        Ok(Self {
            http,
            forge,
            base_url: base_url.trim_end_matches('/').to_owned(),
            repo: repo.to_owned(),
            token,
            context,
            retry,
            last: Mutex::new(Memory::default()),
        })
    }

    /// The forge this client posts to.
    pub fn forge(&self) -> Forge {
        self.forge
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    fn list_url(&self, sha: &str) -> String {
        match self.forge {
            Forge::GitHub => format!(
                "{}/repos/{}/commits/{sha}/statuses?per_page=100",
                self.base_url, self.repo
            ),
            Forge::Gitea | Forge::Forgejo => format!(
                "{}/api/v1/repos/{}/statuses/{sha}?limit=50",
                self.base_url, self.repo
            ),
            Forge::GitLab => format!(
                "{}/projects/{}/repository/commits/{sha}/statuses?per_page=100",
                self.base_url,
                self.repo.replace('/', "%2F")
            ),
        }
    }

    fn url(&self, sha: &str) -> String {
        match self.forge {
            Forge::GitHub => format!("{}/repos/{}/statuses/{sha}", self.base_url, self.repo),
            Forge::Gitea | Forge::Forgejo => format!(
                "{}/api/v1/repos/{}/statuses/{sha}",
                self.base_url, self.repo
            ),
            Forge::GitLab => format!(
                "{}/projects/{}/statuses/{sha}",
                self.base_url,
                self.repo.replace('/', "%2F")
            ),
        }
    }

    /// What the forge will hold once `status` is posted.
    fn remembered(&self, status: &CommitStatus) -> Remembered {
        Remembered {
            state: status.state.api_name(self.forge).to_owned(),
            description: fit_description(self.forge, &status.description),
        }
    }

    fn body(&self, status: &CommitStatus) -> Value {
        let description = fit_description(self.forge, &status.description);
        let state = status.state.api_name(self.forge);
        let mut body = match self.forge {
            Forge::GitLab => {
                json!({ "state": state, "name": self.context, "description": description })
            }
            _ => json!({ "state": state, "context": self.context, "description": description }),
        };
        if let Some(u) = &status.target_url {
            body["target_url"] = Value::String(u.clone());
        }
        body
    }

    fn auth_header(&self) -> (&'static str, HeaderValue) {
        let value = match self.forge {
            Forge::GitHub => format!("Bearer {}", self.token.expose()),
            Forge::Gitea | Forge::Forgejo => format!("token {}", self.token.expose()),
            Forge::GitLab => self.token.expose().to_owned(),
        };
        let name = if self.forge == Forge::GitLab {
            "private-token"
        } else {
            "authorization"
        };
        let mut v =
            HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        v.set_sensitive(true);
        (name, v)
    }

    /// Whether `seed` (or a post) already told what the forge holds for `sha`.
    pub(crate) fn knows(&self, sha: &str) -> bool {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_sha
            .contains_key(sha)
    }

    /// Whether `status` is what the forge already holds for `sha` under this context.
    pub(crate) fn is_unchanged(&self, sha: &str, status: &CommitStatus) -> bool {
        let want = self.remembered(status);
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_sha
            .get(sha)
            .is_some_and(|held| held.as_ref() == Some(&want))
    }

    fn remember(&self, sha: &str, status: &CommitStatus) {
        let held = self.remembered(status);
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha, Some(held));
    }

    /// Reads the commit's current statuses from the forge and remembers the latest one under this
    /// context, so that posting the same state and description again is skipped (also after a
    /// restart of the agent). One request, no retry.
    ///
    /// # Errors
    /// [`StatusError`] when the forge cannot be read; nothing is remembered then.
    pub async fn seed(&self, sha: &str) -> Result<(), StatusError> {
        check_sha(sha)?;
        let (auth_name, auth_value) = self.auth_header();
        let resp = self
            .http
            .get(self.list_url(sha))
            .header(auth_name, auth_value)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| StatusError::Network {
                attempts: 1,
                reason: e.without_url().to_string(),
            })?;
        let code = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !code.is_success() {
            return Err(StatusError::Rejected {
                status: code.as_u16(),
                message: forge_message(&text, self.token.expose()),
            });
        }
        let list: Vec<Value> = serde_json::from_str(&text).map_err(|e| StatusError::Rejected {
            status: code.as_u16(),
            message: format!("the list of statuses is not JSON: {e}"),
        })?;
        let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let name_key = if self.forge == Forge::GitLab {
            "name"
        } else {
            "context"
        };
        let latest = list
            .iter()
            .filter(|v| field(v, name_key).as_deref() == Some(self.context.as_str()))
            .max_by_key(|v| v.get("id").and_then(Value::as_i64).unwrap_or(i64::MIN))
            .map(|v| Remembered {
                state: field(v, "state")
                    .or_else(|| field(v, "status"))
                    .unwrap_or_default(),
                description: field(v, "description").unwrap_or_default(),
            });
        tracing::debug!(forge = %self.forge, %sha, found = latest.is_some(), "read the commit's statuses");
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha, latest);
        Ok(())
    }

    /// One POST of `status` for `sha`, no retry; remembers it when the forge accepted it.
    pub(crate) async fn attempt(&self, sha: &str, status: &CommitStatus) -> Attempt {
        let (auth_name, auth_value) = self.auth_header();
        let sent = self
            .http
            .post(self.url(sha))
            .header(auth_name, auth_value)
            .header("accept", "application/json")
            .json(&self.body(status))
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    wait: None,
                    error: StatusError::Network {
                        attempts: 1,
                        reason: e.without_url().to_string(),
                    },
                };
            }
        };
        let code = resp.status();
        if code.is_success() {
            self.remember(sha, status);
            return Attempt::Sent;
        }
        let wait = rate_limit_wait(code, resp.headers());
        let message = forge_message(&resp.text().await.unwrap_or_default(), self.token.expose());
        if let Some(wait) = wait {
            let error = StatusError::RateLimited { retry_after: wait };
            if wait > self.retry.max_rate_limit_wait {
                return Attempt::Fatal(error);
            }
            return Attempt::Retry {
                wait: Some(wait),
                error,
            };
        }
        if code.is_server_error() {
            return Attempt::Retry {
                wait: None,
                error: StatusError::Server {
                    status: code.as_u16(),
                    attempts: 1,
                    message,
                },
            };
        }
        Attempt::Fatal(StatusError::Rejected {
            status: code.as_u16(),
            message,
        })
    }

    /// Posts `status` for commit `sha` unless it equals the last one posted for it, retrying
    /// inline (this awaits the network, backoffs included: a reconcile should use
    /// [`crate::StatusQueue`] instead).
    ///
    /// # Errors
    /// [`StatusError`]; the dedup memory is only updated on success.
    pub async fn post(&self, sha: &str, status: &CommitStatus) -> Result<Posted, StatusError> {
        check_sha(sha)?;
        if self.is_unchanged(sha, status) {
            return Ok(Posted::Unchanged);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(sha, status).await {
                Attempt::Sent => {
                    tracing::debug!(forge = %self.forge, %sha, state = ?status.state, attempt, "commit status posted");
                    return Ok(Posted::Sent { attempts: attempt });
                }
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry { wait, error } => {
                    tracing::warn!(forge = %self.forge, attempt, error = %error, "commit status not accepted; retrying");
                    if attempt >= self.retry.max_attempts {
                        return Err(with_attempts(error, attempt));
                    }
                    tokio::time::sleep(wait.unwrap_or_else(|| self.backoff(attempt))).await;
                }
            }
        }
    }

    /// The wait after failed attempt number `attempt` (1-based): doubling from the initial
    /// backoff up to the ceiling.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.retry
            .initial_backoff
            .saturating_mul(factor)
            .min(self.retry.max_backoff)
    }
}

/// How long a 429, or a 403 that is a rate limit, asks to wait. `None`: not a rate limit.
fn rate_limit_wait(code: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let retry_after = h("retry-after").and_then(|v| {
        v.parse::<u64>().ok().map(Duration::from_secs).or_else(|| {
            let at = httpdate::parse_http_date(v).ok()?;
            Some(at.duration_since(SystemTime::now()).unwrap_or_default())
        })
    });
    let exhausted =
        h("x-ratelimit-remaining") == Some("0") || h("ratelimit-remaining") == Some("0");
    let reset = h("x-ratelimit-reset")
        .or_else(|| h("ratelimit-reset"))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|epoch| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            Duration::from_secs(epoch.saturating_sub(now))
        });
    match code {
        StatusCode::TOO_MANY_REQUESTS => {
            Some(retry_after.or(reset).unwrap_or(Duration::from_secs(60)))
        }
        StatusCode::FORBIDDEN if retry_after.is_some() || exhausted => {
            Some(retry_after.or(reset).unwrap_or(Duration::from_secs(60)))
        }
        _ => None,
    }
}

/// `error` with the number of attempts made.
pub(crate) fn with_attempts(error: StatusError, attempts: u32) -> StatusError {
    match error {
        StatusError::Network { reason, .. } => StatusError::Network { attempts, reason },
        StatusError::Server {
            status, message, ..
        } => StatusError::Server {
            status,
            attempts,
            message,
        },
        other => other,
    }
}

fn check_sha(sha: &str) -> Result<(), StatusError> {
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StatusError::InvalidConfig(format!("bad commit id {sha:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_per_forge() {
        assert_eq!(CommitState::Pending.api_name(Forge::GitLab), "running");
        assert_eq!(CommitState::Error.api_name(Forge::GitLab), "failed");
        assert_eq!(CommitState::Failure.api_name(Forge::GitHub), "failure");
        assert_eq!(CommitState::Error.api_name(Forge::Gitea), "error");
    }

    #[test]
    fn rate_limit_detection() {
        let mut h = HeaderMap::new();
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h),
            None,
            "plain 403 is a refusal"
        );
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &h),
            Some(Duration::from_secs(3))
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&(now + 100).to_string()).unwrap(),
        );
        let w = rate_limit_wait(StatusCode::FORBIDDEN, &h).unwrap();
        assert!(
            w >= Duration::from_secs(98) && w <= Duration::from_secs(100),
            "{w:?}"
        );
    }
}
