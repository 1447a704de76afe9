//! Typed errors of the Talos client. None of them carries key material.

use std::time::Duration;

/// Errors of the Talos client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The talosconfig could not be read or lacks what is needed.
    #[error("talosconfig: {0}")]
    Config(String),
    /// A certificate or key could not be loaded into TLS.
    #[error("tls: {0}")]
    Tls(String),
    /// The endpoint is not a valid host or address.
    #[error("invalid endpoint {0:?}")]
    InvalidEndpoint(String),
    /// The node could not be reached (connection refused, reset, TLS handshake failed), after the
    /// configured retries.
    #[error("{method}: node unavailable: {message}")]
    Unavailable {
        /// The gRPC method.
        method: &'static str,
        /// What the transport said.
        message: String,
    },
    /// The call did not finish within its timeout.
    #[error("{method}: timed out after {after:?}")]
    Timeout {
        /// The gRPC method.
        method: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The node answered with a gRPC error.
    #[error("{method}: {code:?}: {message}")]
    Rpc {
        /// The gRPC method.
        method: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The node's Talos version does not offer this operation.
    #[error("{operation} is not supported by Talos {version}")]
    NotSupported {
        /// What was attempted.
        operation: &'static str,
        /// The node's version tag.
        version: String,
    },
    /// The node answered, but not with what the API promises (e.g. no message in a reply).
    #[error("{method}: unexpected reply: {message}")]
    Protocol {
        /// The gRPC method.
        method: &'static str,
        /// What was wrong.
        message: String,
    },
    /// Minting a client certificate from the bundle failed.
    #[error(transparent)]
    Pki(#[from] vixen_pki::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC status code, when the node answered with one (Unavailable for unreachable nodes).
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { code, .. } => Some(*code),
            Error::Unavailable { .. } => Some(tonic::Code::Unavailable),
            Error::Timeout { .. } => Some(tonic::Code::DeadlineExceeded),
            _ => None,
        }
    }

    /// A fixed label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Tls(_) => "tls",
            Error::InvalidEndpoint(_) => "endpoint",
            Error::Unavailable { .. } => "unavailable",
            Error::Timeout { .. } => "timeout",
            Error::Rpc { .. } => "rpc",
            Error::NotSupported { .. } => "not_supported",
            Error::Protocol { .. } => "protocol",
            Error::Pki(_) => "pki",
        }
    }

    pub(crate) fn from_status(method: &'static str, status: tonic::Status) -> Self {
        if status.code() == tonic::Code::Unavailable {
            Error::Unavailable {
                method,
                message: status.message().to_string(),
            }
        } else {
            Error::Rpc {
                method,
                code: status.code(),
                message: status.message().to_string(),
            }
        }
    }
}
