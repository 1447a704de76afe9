//! Client credentials: a talosconfig (`$TALOSCONFIG`, `~/.talos/config`, the in-cluster path) or a
//! secrets bundle (an `os:admin` client certificate minted from its OS CA).
//!
//! Validation happens in two steps: [`Talosconfig::parse`] only checks the YAML shape;
//! [`Talosconfig::credentials`] resolves the context and decodes the PEM fields.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A talosconfig file: `{context, contexts: {name: {endpoints, nodes, ca, crt, key}}}`.
#[derive(Deserialize)]
pub struct Talosconfig {
    /// The current context name.
    #[serde(default)]
    pub context: String,
    /// Contexts by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One talosconfig context; `ca`, `crt` and `key` are base64 of PEM.
#[derive(Deserialize, Default)]
pub struct Context {
    /// Endpoints (apid addresses) to connect to.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Default target nodes.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Base64 of the OS CA PEM.
    #[serde(default)]
    pub ca: String,
    /// Base64 of the client certificate PEM.
    #[serde(default)]
    pub crt: String,
    /// Base64 of the client key PEM (secret).
    #[serde(default)]
    key: Zeroizing<String>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("endpoints", &self.endpoints)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// What a client presents and trusts: PEM text (not base64).
#[derive(Clone)]
pub struct Credentials {
    /// The CA that signs node certificates (the OS CA).
    pub ca_pem: String,
    /// The client certificate.
    pub cert_pem: String,
    /// The client key (secret).
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials { key_pem: <redacted>, .. }")
    }
}

fn decode(field: &str, b64: &str) -> Result<String> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|_| Error::Config(format!("{field}: not base64")))?;
    let text = String::from_utf8(bytes).map_err(|_| Error::Config(format!("{field}: not PEM")))?;
    if !text.contains("-----BEGIN ") {
        return Err(Error::Config(format!("{field}: not PEM")));
    }
    // Talos writes Ed25519 keys as `ED25519 PRIVATE KEY` (PKCS#8 inside).
    Ok(text.replace("ED25519 PRIVATE KEY", "PRIVATE KEY"))
}

impl Talosconfig {
    /// Parses a talosconfig document (YAML).
    ///
    /// # Errors
    /// [`Error::Config`] when the text is not a talosconfig.
    pub fn parse(text: &str) -> Result<Self> {
        serde_yaml_ng::from_str(text).map_err(|e| Error::Config(format!("parse: {e}")))
    }

    /// Reads the talosconfig that talosctl would use: `$TALOSCONFIG`, then `~/.talos/config`,
    /// then `/var/run/secrets/talos.dev/config` (inside Kubernetes).
    ///
    /// # Errors
    /// [`Error::Config`] when none exists or it does not parse.
    pub fn load_default() -> Result<(PathBuf, Self)> {
        let mut candidates = Vec::new();
        if let Some(p) = std::env::var_os("TALOSCONFIG") {
            candidates.push(PathBuf::from(p));
        }
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(Path::new(&home).join(".talos/config"));
        }
        candidates.push(PathBuf::from("/var/run/secrets/talos.dev/config"));
        for path in candidates {
            if path.is_file() {
                let cfg = Self::load(&path)?;
                return Ok((path, cfg));
            }
        }
        Err(Error::Config(
            "no talosconfig found ($TALOSCONFIG, ~/.talos/config)".into(),
        ))
    }

    /// Reads one talosconfig file.
    ///
    /// # Errors
    /// [`Error::Config`] when it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// The named context, or the current one when `name` is `None`.
    ///
    /// # Errors
    /// [`Error::Config`] when the context does not exist.
    pub fn context(&self, name: Option<&str>) -> Result<&Context> {
        let name = name.unwrap_or(&self.context);
        self.contexts
            .get(name)
            .ok_or_else(|| Error::Config(format!("no context {name:?}")))
    }

    /// Credentials of the named (or current) context.
    ///
    /// # Errors
    /// [`Error::Config`] when the context is missing or a field is not base64 PEM.
    pub fn credentials(&self, name: Option<&str>) -> Result<Credentials> {
        let ctx = self.context(name)?;
        Ok(Credentials {
            ca_pem: decode("ca", &ctx.ca)?,
            cert_pem: decode("crt", &ctx.crt)?,
            key_pem: Zeroizing::new(decode("key", &ctx.key)?),
        })
    }
}

impl Credentials {
    /// An `os:admin` client certificate minted from the bundle's OS CA (talosctl's default TTL).
    ///
    /// # Errors
    /// [`Error::Pki`] when the bundle's OS CA cannot sign.
    pub fn from_bundle(bundle: &vixen_pki::SecretsBundle) -> Result<Self> {
        let minted = vixen_pki::admin_client(bundle)?;
        Self::from_minted(&bundle.certs.os.crt, &minted)
    }

    /// Credentials from a minted client certificate and the base64 PEM of the CA to trust.
    ///
    /// # Errors
    /// [`Error::Config`] when the CA is not base64 PEM.
    pub fn from_minted(ca_b64: &str, minted: &vixen_pki::Minted) -> Result<Self> {
        Ok(Credentials {
            ca_pem: decode("ca", ca_b64)?,
            cert_pem: minted.cert_pem.clone(),
            key_pem: Zeroizing::new(minted.key_pem.expose().to_string()),
        })
    }

    /// A talosconfig document holding these credentials under `context`.
    pub fn to_talosconfig(&self, context: &str, endpoints: &[String]) -> String {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            context: &'a str,
            contexts: BTreeMap<&'a str, Ctx<'a>>,
        }
        #[derive(serde::Serialize)]
        struct Ctx<'a> {
            endpoints: &'a [String],
            ca: String,
            crt: String,
            key: String,
        }
        let ctx = Ctx {
            endpoints,
            ca: B64.encode(&self.ca_pem),
            crt: B64.encode(&self.cert_pem),
            key: B64.encode(self.key_pem.as_bytes()),
        };
        let out = Out {
            context,
            contexts: [(context, ctx)].into_iter().collect(),
        };
        serde_yaml_ng::to_string(&out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talosconfig_round_trip_through_bundle_credentials() {
        let bundle = vixen_pki::SecretsBundle::generate().unwrap();
        let creds = Credentials::from_bundle(&bundle).unwrap();
        let text = creds.to_talosconfig("lab", &["127.0.10.1".into()]);
        let cfg = Talosconfig::parse(&text).unwrap();
        assert_eq!(cfg.context(None).unwrap().endpoints, ["127.0.10.1"]);
        let back = cfg.credentials(None).unwrap();
        assert_eq!(back.cert_pem, creds.cert_pem);
        assert_eq!(*back.key_pem, *creds.key_pem);
        assert!(!format!("{back:?}").contains("PRIVATE"));
    }

    #[test]
    fn missing_context_is_a_config_error() {
        let cfg = Talosconfig::parse("context: a\ncontexts: {}\n").unwrap();
        assert!(matches!(cfg.credentials(None), Err(Error::Config(_))));
    }
}
