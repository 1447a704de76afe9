//! Push webhook verification: the forge is recognised by its event header, the request is
//! authenticated (HMAC-SHA256 of the raw body, or GitLab's shared token) with constant-time
//! comparisons, and only then is the body parsed.
//!
//! | forge | event header | proof |
//! |---|---|---|
//! | GitHub | `X-GitHub-Event: push` | `X-Hub-Signature-256: sha256=<hex>` |
//! | Forgejo | `X-Forgejo-Event: push` | `X-Forgejo-Signature: <hex>` |
//! | Gitea | `X-Gitea-Event: push` | `X-Gitea-Signature: <hex>` |
//! | GitLab | `X-Gitlab-Event: Push Hook` / `Tag Push Hook` | `X-Gitlab-Token: <secret>` |

use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Forge, Secret};

/// A verified push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEvent {
    /// Which forge sent it.
    pub forge: Forge,
    /// `owner/name` (GitLab: `path_with_namespace`).
    pub repo: String,
    /// The pushed ref (`refs/heads/main`).
    pub reference: String,
    /// The commit the ref points at after the push (all zeros when the ref was deleted).
    pub after: String,
}

/// Why a webhook request was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// No known event header: not from a supported forge.
    #[error("not a GitHub, Gitea, Forgejo or GitLab webhook")]
    UnknownForge,
    /// The signature or token header is missing.
    #[error("{0} webhook without signature or token")]
    MissingSignature(Forge),
    /// The signature or token does not match the secret.
    #[error("{0} webhook with a wrong signature or token")]
    BadSignature(Forge),
    /// Verified, but not a push (e.g. a ping); nothing to do.
    #[error("{forge} {event:?} event ignored")]
    NotPush {
        /// Forge.
        forge: Forge,
        /// The event header's value.
        event: String,
    },
    /// Verified, but the body is not a push payload.
    #[error("{forge} push payload is malformed: {reason}")]
    BadPayload {
        /// Forge.
        forge: Forge,
        /// What is wrong.
        reason: String,
    },
    /// The configured secret is empty: every request would verify trivially, so none does.
    #[error("the webhook secret is empty")]
    EmptySecret,
}

impl WebhookError {
    /// The HTTP status the receiver answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::UnknownForge | Self::MissingSignature(_) | Self::BadSignature(_) => 401,
            Self::NotPush { .. } => 202,
            Self::BadPayload { .. } => 400,
            Self::EmptySecret => 500,
        }
    }

    /// A fixed label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownForge => "unknown_forge",
            Self::MissingSignature(_) | Self::BadSignature(_) => "unverified",
            Self::NotPush { .. } => "not_push",
            Self::BadPayload { .. } => "bad_payload",
            Self::EmptySecret => "config",
        }
    }
}

/// Verifies a webhook request and extracts the push it reports.
///
/// # Errors
/// See [`WebhookError`]; only [`WebhookError::NotPush`] and [`WebhookError::BadPayload`] come
/// from requests that passed verification.
pub fn verify_push(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
) -> Result<PushEvent, WebhookError> {
    if secret.expose().is_empty() {
        return Err(WebhookError::EmptySecret);
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    // Forgejo also sends the Gitea headers, so it is recognised first.
    let (forge, event) = [
        (Forge::GitHub, "x-github-event"),
        (Forge::Forgejo, "x-forgejo-event"),
        (Forge::Gitea, "x-gitea-event"),
        (Forge::GitLab, "x-gitlab-event"),
    ]
    .into_iter()
    .find_map(|(f, h)| header(h).map(|e| (f, e.to_owned())))
    .ok_or(WebhookError::UnknownForge)?;

    let verified = match forge {
        Forge::GitHub => {
            let sig = header("x-hub-signature-256").ok_or(WebhookError::MissingSignature(forge))?;
            let hex = sig
                .strip_prefix("sha256=")
                .ok_or(WebhookError::BadSignature(forge))?;
            hmac_matches(secret, body, hex)
        }
        Forge::Forgejo | Forge::Gitea => {
            let name = if forge == Forge::Forgejo {
                "x-forgejo-signature"
            } else {
                "x-gitea-signature"
            };
            let sig = header(name).ok_or(WebhookError::MissingSignature(forge))?;
            hmac_matches(secret, body, sig)
        }
        Forge::GitLab => {
            let token = header("x-gitlab-token").ok_or(WebhookError::MissingSignature(forge))?;
            // Hash both sides so the comparison is constant-time whatever the lengths.
            let a = Sha256::digest(token.as_bytes());
            let b = Sha256::digest(secret.expose().as_bytes());
            bool::from(a.ct_eq(&b))
        }
    };
    if !verified {
        return Err(WebhookError::BadSignature(forge));
    }

    let is_push = match forge {
        Forge::GitLab => event == "Push Hook" || event == "Tag Push Hook",
        _ => event == "push",
    };
    if !is_push {
        return Err(WebhookError::NotPush { forge, event });
    }
    parse_push(forge, body)
}

/// `hex` is the lower- or upper-case hex HMAC-SHA256 of `body`; compared in constant time.
fn hmac_matches(secret: &Secret, body: &[u8], hex: &str) -> bool {
    let Ok(given) = hex::decode(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "ref")]
    reference: String,
    after: String,
    repository: Option<Repository>,
    project: Option<Project>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: Option<String>,
}

#[derive(Deserialize)]
struct Project {
    path_with_namespace: Option<String>,
}

fn parse_push(forge: Forge, body: &[u8]) -> Result<PushEvent, WebhookError> {
    let bad = |reason: String| WebhookError::BadPayload { forge, reason };
    let p: Payload = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let repo = match forge {
        Forge::GitLab => p.project.and_then(|p| p.path_with_namespace),
        _ => p.repository.and_then(|r| r.full_name),
    }
    .ok_or_else(|| bad("no repository name".into()))?;
    if p.after.len() != 40 || !p.after.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("`after` is not a commit id".into()));
    }
    Ok(PushEvent {
        forge,
        repo,
        reference: p.reference,
        after: p.after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_accepts_upper_and_lower_hex_only_when_right() {
        let s = Secret::new("k");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"body");
        let hex = hex::encode(mac.finalize().into_bytes());
        assert!(hmac_matches(&s, b"body", &hex));
        assert!(hmac_matches(&s, b"body", &hex.to_uppercase()));
        assert!(!hmac_matches(&s, b"body2", &hex));
        assert!(!hmac_matches(&s, b"body", "zz"));
        assert!(!hmac_matches(&s, b"body", &hex[..10]));
    }

    #[test]
    fn empty_secret_is_refused() {
        let err = verify_push(&HeaderMap::new(), b"{}", &Secret::new(" \n")).unwrap_err();
        assert!(matches!(err, WebhookError::EmptySecret));
    }
}
