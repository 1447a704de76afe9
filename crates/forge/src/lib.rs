//! Forge integration for the vixen agent: verified push webhooks (GitHub, Gitea/Forgejo, GitLab)
//! and commit statuses posted back to the commit.
//!
//! ```text
//! forge --POST--> serve_webhooks / handle_webhook --verify--> PushEvent --> on_push (trigger)
//!                                      \--unverified--> 401 + why, nothing triggered
//! reconcile --StatusQueue::post(sha, CommitStatus)  (sync)
//!               --> worker task --StatusClient--> forge API (seed + dedup, retries, rate limits)
//! ```

mod guess;
mod queue;
mod server;
mod status;
mod text;
mod webhook;

use std::fmt;

use zeroize::Zeroizing;

pub use guess::{ForgeGuess, guess_forge};
pub use queue::{QueueStats, StatusQueue};
pub use server::{WebhookResponse, handle_webhook, serve_webhooks};
pub use status::{
    CommitState, CommitStatus, Posted, RetryPolicy, StatusClient, StatusError, context_for,
};
pub use text::{description_limit, fit_description};
pub use webhook::{PushEvent, WebhookError, verify_push};

/// The kind of forge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forge {
    /// GitHub and GitHub Enterprise.
    GitHub,
    /// Gitea.
    Gitea,
    /// Forgejo (Gitea's API).
    Forgejo,
    /// GitLab.
    GitLab,
}

impl Forge {
    /// Lower-case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::Gitea => "gitea",
            Self::Forgejo => "forgejo",
            Self::GitLab => "gitlab",
        }
    }
}

impl fmt::Display for Forge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token or webhook secret that never prints.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret value (surrounding whitespace, e.g. a trailing newline in a mounted file,
    /// is removed).
    pub fn new(value: impl Into<String>) -> Self {
        let v: String = value.into();
        Self(Zeroizing::new(v.trim().to_owned()))
    }

    /// The secret itself; only for signing or an auth header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
