//! The error type of this crate. No variant ever carries plaintext or key material: only
//! paths of values, recipients (public keys), file names, line numbers and fixed reasons.

use std::path::PathBuf;

use crate::Format;

/// Everything that can go wrong while loading keys or decrypting a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input has no `sops` metadata (or no `[sops]` section / `sops_` keys): it is not
    /// a SOPS file, or it was given with the wrong format.
    #[error("not a SOPS file: no sops metadata found (is the input type {0} right?)")]
    NotSopsFile(Format),

    /// The input is not valid in its format. `line` is 1-based when known.
    #[error("cannot parse {format} input{}: {reason}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Parse {
        /// The format the input was parsed as.
        format: Format,
        /// The line of the problem, when the parser knows it.
        line: Option<usize>,
        /// What is wrong (never a copy of the input).
        reason: String,
    },

    /// The `sops` metadata is present but unusable (a missing or ill-typed field).
    #[error("invalid sops metadata: {0}")]
    InvalidMetadata(String),

    /// None of the identities in the keyring can open the data key.
    #[error(
        "no age identity matches this file; it is encrypted to: {}{}",
        if recipients.is_empty() { "(no age recipients)".to_string() } else { recipients.join(", ") },
        if other_key_types.is_empty() { String::new() } else { format!(" (also: {}, not supported)", other_key_types.join(", ")) }
    )]
    NoMatchingKey {
        /// The file's age recipients (public keys), in file order.
        recipients: Vec<String>,
        /// Other master key types the file lists (`pgp`, `kms`, ...), which vixen cannot use.
        other_key_types: Vec<&'static str>,
    },

    /// The file can only be opened with master keys other than age.
    #[error("unsupported key type: this file is encrypted only to {} keys; vixen supports age only", .0.join(", "))]
    UnsupportedKeyType(Vec<&'static str>),

    /// With Shamir key groups, fewer groups than the threshold could be opened.
    #[error("only {opened} of the {threshold} required key groups could be decrypted; recipients: {}", recipients.join(", "))]
    NotEnoughKeyGroups {
        /// Groups opened with the available identities.
        opened: usize,
        /// `shamir_threshold`.
        threshold: usize,
        /// All age recipients of the file.
        recipients: Vec<String>,
    },

    /// The computed MAC differs from the stored one, or an encrypted value failed
    /// authentication: the file was modified after it was encrypted.
    #[error("MAC mismatch: the file was modified after it was encrypted")]
    MacMismatch,

    /// A value that should be encrypted is not a well-formed `ENC[...]` value, or has an
    /// unknown type, or its plaintext does not parse as its declared type.
    #[error("malformed encrypted value at `{path}`: {reason}")]
    MalformedValue {
        /// Dotted path of the value, e.g. `cluster.secret` (list indexes as `[0]`).
        path: String,
        /// What is wrong with it (never the value).
        reason: &'static str,
    },

    /// A key file could not be read.
    #[error("cannot read age key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A line of a key file is not an age identity this crate understands.
    #[error("invalid age identity in {origin} at line {line}")]
    InvalidIdentity {
        /// Where the keys came from (a path or an environment variable name).
        origin: String,
        /// 1-based line (for SSH keys, the first line of the key).
        line: usize,
    },

    /// No identity was found anywhere sops would look.
    #[error("no age identities found (looked in SOPS_AGE_KEY, SOPS_AGE_KEY_FILE and {default})")]
    NoIdentities {
        /// The default keys file path that was tried.
        default: String,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A fixed, low-cardinality label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::NotSopsFile(_) => "not_sops_file",
            Error::Parse { .. } => "parse",
            Error::InvalidMetadata(_) => "invalid_metadata",
            Error::NoMatchingKey { .. } => "no_matching_key",
            Error::UnsupportedKeyType(_) => "unsupported_key_type",
            Error::NotEnoughKeyGroups { .. } => "not_enough_key_groups",
            Error::MacMismatch => "mac_mismatch",
            Error::MalformedValue { .. } => "malformed_value",
            Error::KeyFile { .. } => "key_file",
            Error::InvalidIdentity { .. } => "invalid_identity",
            Error::NoIdentities { .. } => "no_identities",
        }
    }
}
