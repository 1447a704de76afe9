//! Push webhook verification: the forge is recognised by its own event header, the request is
//! authenticated (HMAC-SHA256, or GitLab's shared token) with constant-time comparisons, and only
//! then is the payload parsed.
//!
//! Gitea and Forgejo send GitHub's headers too (`X-GitHub-Event`, `X-Hub-Signature-256`) for
//! compatibility, and Forgejo sends Gitea's, so detection goes from the most specific forge to the
//! most generic one: Forgejo, Gitea (or Gogs), GitHub, GitLab.
//!
//! | forge | event header | proof | HMAC over, form hook (`payload=`) |
//! |---|---|---|---|
//! | Forgejo | `X-Forgejo-Event` | `X-Forgejo-Signature: <hex>` | the JSON inside `payload` |
//! | Gitea | `X-Gitea-Event` | `X-Gitea-Signature: <hex>` | the JSON inside `payload` |
//! | Gogs (reported as Gitea) | `X-Gogs-Event` | `X-Gogs-Signature: <hex>` | the JSON inside `payload` |
//! | GitHub | `X-GitHub-Event` | `X-Hub-Signature-256: sha256=<hex>` | the body as sent |
//! | GitLab | `X-Gitlab-Event` | `X-Gitlab-Token: <secret>` | (JSON only) |
//!
//! Sources: Gitea `services/webhook/deliver.go` (`newDefaultRequest` builds the form body from
//! `url.Values{"payload": ...}`, `addDefaultHeaders` signs `t.PayloadContent`, the JSON) in
//! go-gitea/gitea; Forgejo `services/webhook/default.go` and
//! `services/webhook/shared/payloader.go` (`AddDefaultHeaders` adds X-Forgejo-*, X-Gitea-*,
//! X-Gogs-*, X-Hub-Signature(-256), X-GitHub-*, signing the JSON payload); GitHub docs
//! `webhooks/using-webhooks/validating-webhook-deliveries` (the HMAC of the payload body as
//! received) and `creating-webhooks` (form: the JSON "as a form parameter called payload").

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

/// Why a webhook request was not acted on. `Display` is the short plain-text reason the receiver
/// answers with; it never contains the secret or a signature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// No known event header: not from a supported forge.
    #[error(
        "no X-Forgejo-Event, X-Gitea-Event, X-Gogs-Event, X-GitHub-Event or X-Gitlab-Event header: \
         not a webhook from a supported forge"
    )]
    UnknownForge,
    /// The signature or token header is missing.
    #[error(
        "{forge} webhook without a {header} header: set the hook's secret to vixen's webhook secret"
    )]
    MissingSignature {
        /// Forge.
        forge: Forge,
        /// The header that should carry the proof.
        header: &'static str,
    },
    /// The signature or token does not match the secret.
    #[error("{forge} webhook whose {header} does not match: the hook's secret is not vixen's")]
    BadSignature {
        /// Forge.
        forge: Forge,
        /// The header that carried the proof.
        header: &'static str,
    },
    /// A verified ping (GitHub sends one when a hook is created); nothing to do.
    #[error("pong: {0} webhook verified")]
    Ping(Forge),
    /// Verified, but not a push; nothing to do.
    #[error("{forge} {event:?} event ignored: vixen acts on push events")]
    NotPush {
        /// Forge.
        forge: Forge,
        /// The event header's value (at most 64 characters).
        event: String,
    },
    /// The body is not a push payload (or a form without a `payload` field).
    #[error("{forge} push payload is malformed: {reason}")]
    BadPayload {
        /// Forge.
        forge: Forge,
        /// What is wrong.
        reason: String,
    },
    /// The configured secret is empty: every request would verify trivially, so none does.
    #[error("vixen's webhook secret is empty: no request can be verified")]
    EmptySecret,
}

impl WebhookError {
    /// The HTTP status the receiver answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::MissingSignature { .. } | Self::BadSignature { .. } => 401,
            Self::Ping(_) => 200,
            Self::NotPush { .. } => 202,
            Self::UnknownForge | Self::BadPayload { .. } => 400,
            Self::EmptySecret => 500,
        }
    }

    /// A fixed label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownForge => "unknown_forge",
            Self::MissingSignature { .. } | Self::BadSignature { .. } => "unverified",
            Self::Ping(_) => "ping",
            Self::NotPush { .. } => "not_push",
            Self::BadPayload { .. } => "bad_payload",
            Self::EmptySecret => "config",
        }
    }
}

/// How a forge proves a request.
#[derive(Clone, Copy)]
enum Proof {
    /// Hex HMAC-SHA256 of the JSON payload (the `payload` field of a form body).
    GiteaHmac(&'static str),
    /// `sha256=<hex>` HMAC-SHA256 of the body exactly as sent.
    GitHubHmac,
    /// The secret itself.
    GitLabToken,
}

/// Recognises the forge by its own headers, most specific first (see the module docs).
fn detect(header: &impl Fn(&str) -> Option<String>) -> Option<(Forge, String, Proof)> {
    let gitea_like = [
        (Forge::Forgejo, "x-forgejo-event", "X-Forgejo-Signature"),
        (Forge::Gitea, "x-gitea-event", "X-Gitea-Signature"),
        (Forge::Gitea, "x-gogs-event", "X-Gogs-Signature"),
    ];
    for (forge, event, sig) in gitea_like {
        if let Some(e) = header(event) {
            return Some((forge, e, Proof::GiteaHmac(sig)));
        }
    }
    if let Some(e) = header("x-github-event") {
        return Some((Forge::GitHub, e, Proof::GitHubHmac));
    }
    let gitlab = header("x-gitlab-event");
    if gitlab.is_some() || header("x-gitlab-token").is_some() {
        return Some((
            Forge::GitLab,
            gitlab.unwrap_or_default(),
            Proof::GitLabToken,
        ));
    }
    None
}

/// Verifies a webhook request and extracts the push it reports. JSON and form
/// (`application/x-www-form-urlencoded`, `payload=<JSON>`) bodies are accepted.
///
/// # Errors
/// See [`WebhookError`]; [`WebhookError::Ping`], [`WebhookError::NotPush`] and
/// [`WebhookError::BadPayload`] after the signature (where the forge signs the form body) was
/// verified.
pub fn verify_push(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
) -> Result<PushEvent, WebhookError> {
    if secret.expose().is_empty() {
        return Err(WebhookError::EmptySecret);
    }
    // An empty header counts as absent: Gitea sends its signature headers empty when the hook
    // has no secret (deliver.go `addDefaultHeaders`).
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let (forge, event, proof) = detect(&header).ok_or(WebhookError::UnknownForge)?;
    let is_form = header("content-type").is_some_and(|t| {
        t.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    let bad = |reason: &str| WebhookError::BadPayload {
        forge,
        reason: reason.to_owned(),
    };
    let form_payload = || -> Result<Vec<u8>, WebhookError> {
        form_value(body, "payload")
            .map_err(|()| bad("the form body is not valid URL encoding"))?
            .ok_or_else(|| bad("the form body has no payload field"))
    };

    let json: Vec<u8> = match proof {
        Proof::GiteaHmac(name) => {
            let missing = WebhookError::MissingSignature {
                forge,
                header: name,
            };
            let sig = header(&name.to_ascii_lowercase()).ok_or(missing)?;
            // Gitea and Forgejo sign the JSON payload, not the form body that carries it.
            let json = if is_form {
                form_payload()?
            } else {
                body.to_vec()
            };
            if !hmac_matches(secret, &json, &sig) {
                return Err(WebhookError::BadSignature {
                    forge,
                    header: name,
                });
            }
            json
        }
        Proof::GitHubHmac => {
            let name = "X-Hub-Signature-256";
            let sig = header("x-hub-signature-256").ok_or(WebhookError::MissingSignature {
                forge,
                header: name,
            })?;
            // GitHub signs the body as sent, form-encoded or not.
            let ok = sig
                .strip_prefix("sha256=")
                .is_some_and(|hex| hmac_matches(secret, body, hex));
            if !ok {
                return Err(WebhookError::BadSignature {
                    forge,
                    header: name,
                });
            }
            if is_form {
                form_payload()?
            } else {
                body.to_vec()
            }
        }
        Proof::GitLabToken => {
            let name = "X-Gitlab-Token";
            let token = header("x-gitlab-token").ok_or(WebhookError::MissingSignature {
                forge,
                header: name,
            })?;
            // Hash both sides so the comparison is constant-time whatever the lengths.
            let a = Sha256::digest(token.as_bytes());
            let b = Sha256::digest(secret.expose().as_bytes());
            if !bool::from(a.ct_eq(&b)) {
                return Err(WebhookError::BadSignature {
                    forge,
                    header: name,
                });
            }
            body.to_vec()
        }
    };

    let is_push = match forge {
        Forge::GitLab => event == "Push Hook" || event == "Tag Push Hook",
        _ => event == "push",
    };
    if !is_push {
        if forge == Forge::GitHub && event == "ping" {
            return Err(WebhookError::Ping(forge));
        }
        return Err(WebhookError::NotPush {
            forge,
            event: event.chars().take(64).collect(),
        });
    }
    parse_push(forge, &json)
}

/// The decoded value of field `name` in an `application/x-www-form-urlencoded` body (`+` is a
/// space, `%XX` a byte). `Err` when an escape is malformed.
fn form_value(body: &[u8], name: &str) -> Result<Option<Vec<u8>>, ()> {
    for pair in body.split(|&b| b == b'&') {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        if percent_decode(k)? == name.as_bytes() {
            return percent_decode(v).map(Some);
        }
    }
    Ok(None)
}

fn percent_decode(s: &[u8]) -> Result<Vec<u8>, ()> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or(())?;
                // from_str_radix would take a sign ("%+1"): only two hex digits are an escape.
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(());
                }
                let hex = std::str::from_utf8(hex).map_err(|_| ())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
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
    fn form_values_are_decoded() {
        let body = b"other=1&payload=%7B%22a%22%3A+%22b%2Bc%22%7D";
        assert_eq!(
            form_value(body, "payload").unwrap().unwrap(),
            br#"{"a": "b+c"}"#
        );
        assert_eq!(form_value(b"x=1", "payload").unwrap(), None);
        assert!(form_value(b"payload=%zz", "payload").is_err());
        assert!(form_value(b"payload=%4", "payload").is_err());
        assert!(form_value(b"payload=%+1", "payload").is_err());
    }

    #[test]
    fn empty_secret_is_refused() {
        let err = verify_push(&HeaderMap::new(), b"{}", &Secret::new(" \n")).unwrap_err();
        assert!(matches!(err, WebhookError::EmptySecret));
    }
}
