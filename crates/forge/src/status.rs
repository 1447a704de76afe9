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
//! the last one posted for the same commit and context is not sent again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};

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
    #[error("forge answered {status} after {attempts} attempts")]
    Server {
        /// Last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
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
        /// The start of the forge's answer.
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
    last: Mutex<HashMap<String, (CommitState, String)>>,
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
            last: Mutex::new(HashMap::new()),
        })
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

    fn body(&self, status: &CommitStatus) -> Value {
        let limit = if self.forge == Forge::GitHub {
            140
        } else {
            255
        };
        let description = truncate(&status.description, limit);
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

    /// Posts `status` for commit `sha` unless it equals the last one posted for it.
    ///
    /// # Errors
    /// [`StatusError`]; the dedup memory is only updated on success.
    pub async fn post(&self, sha: &str, status: &CommitStatus) -> Result<Posted, StatusError> {
        if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StatusError::InvalidConfig(format!("bad commit id {sha:?}")));
        }
        let key = format!("{sha}\n{}", self.context);
        let desc = status.description.clone();
        if self
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            == Some(&(status.state, desc.clone()))
        {
            return Ok(Posted::Unchanged);
        }
        let url = self.url(sha);
        let body = self.body(status);
        let (auth_name, auth_value) = self.auth_header();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.retry.max_attempts;
            let sent = self
                .http
                .post(&url)
                .header(auth_name, auth_value.clone())
                .header("accept", "application/json")
                .json(&body)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let reason = e.without_url().to_string();
                    tracing::warn!(forge = %self.forge, attempt, error = %reason, "commit status: network error");
                    if last {
                        return Err(StatusError::Network {
                            attempts: attempt,
                            reason,
                        });
                    }
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
            };
            let code = resp.status();
            if code.is_success() {
                self.last
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, (status.state, desc));
                tracing::debug!(forge = %self.forge, %sha, state = ?status.state, attempt, "commit status posted");
                return Ok(Posted::Sent { attempts: attempt });
            }
            if let Some(wait) = rate_limit_wait(code, resp.headers()) {
                tracing::warn!(forge = %self.forge, attempt, wait_s = wait.as_secs_f64(), "commit status: rate limited");
                if wait > self.retry.max_rate_limit_wait || last {
                    return Err(StatusError::RateLimited { retry_after: wait });
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            if code.is_server_error() {
                tracing::warn!(forge = %self.forge, attempt, status = code.as_u16(), "commit status: server error");
                if last {
                    return Err(StatusError::Server {
                        status: code.as_u16(),
                        attempts: attempt,
                    });
                }
                tokio::time::sleep(self.backoff(attempt)).await;
                continue;
            }
            let text = resp.text().await.unwrap_or_default();
            return Err(StatusError::Rejected {
                status: code.as_u16(),
                message: truncate(&text, 200),
            });
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
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

/// Cuts to `max` characters, ending with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
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
    fn truncation_counts_characters() {
        let long = "é".repeat(200);
        let t = truncate(&long, 140);
        assert_eq!(t.chars().count(), 140);
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short", 140), "short");
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
