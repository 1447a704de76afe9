//! Talos PKI: the secrets bundle (`talosctl gen secrets` format) and the certificates minted from it.
//!
//! ```text
//! SecretsBundle ──certs.os (Ed25519 CA)──► client cert (O = roles, e.g. os:admin) ─► talosconfig
//!               │                       └► node server cert (SANs = node addresses) ─► apid (lab)
//!               └─certs.etcd / k8s / k8saggregator / k8sserviceaccount ─► machine config
//! ```
//!
//! Every PEM in the bundle is stored base64-encoded, as Talos stores it. Key material is kept in
//! [`zeroize`]d strings and no type here prints a key in `Debug`.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// Errors of this module. They never carry key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field of the bundle is not base64 of a PEM document.
    #[error("{field}: not base64-encoded PEM")]
    Encoding {
        /// Dotted path of the field in the bundle, e.g. `certs.os.key`.
        field: &'static str,
    },
    /// A certificate or key could not be parsed or produced.
    #[error("{field}: {source}")]
    Crypto {
        /// Dotted path of the field in the bundle.
        field: &'static str,
        /// What the certificate library said.
        #[source]
        source: rcgen::Error,
    },
    /// The system random source failed.
    #[error("random source failed: {0}")]
    Random(String),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A certificate and its private key, both base64 of PEM, as in the Talos bundle.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertAndKey {
    /// Base64 of the certificate PEM.
    pub crt: String,
    /// Base64 of the private key PEM.
    pub key: Secret,
}

/// A private key only (the service-account signing key).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyOnly {
    /// Base64 of the private key PEM.
    pub key: Secret,
}

/// A string that holds secret material: zeroized on drop, never shown by `Debug`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }
    /// The secret value; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for KeyOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyOnly { key: <redacted> }")
    }
}

/// The Talos secrets bundle, field for field as `talosctl gen secrets` writes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretsBundle {
    /// Cluster identity.
    pub cluster: ClusterIdentity,
    /// Shared secrets.
    pub secrets: BundleSecrets,
    /// The trustd join token.
    pub trustdinfo: TrustdInfo,
    /// Certificate authorities and keys.
    pub certs: BundleCerts,
}

/// `cluster` section of the bundle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// Base64 of 32 random bytes.
    pub id: String,
    /// Base64 of 32 random bytes.
    pub secret: Secret,
}

/// `secrets` section of the bundle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleSecrets {
    /// Kubernetes bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`).
    pub bootstraptoken: Secret,
    /// Base64 of 32 bytes: the secretbox key for Kubernetes secrets at rest.
    pub secretboxencryptionsecret: Secret,
    /// Older clusters use AES-CBC instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbcencryptionsecret: Option<Secret>,
}

/// `trustdinfo` section of the bundle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustdInfo {
    /// Machine token used by workers to join (`[a-z0-9]{6}.[a-z0-9]{16}`).
    pub token: Secret,
}

/// `certs` section of the bundle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleCerts {
    /// etcd CA.
    pub etcd: CertAndKey,
    /// Kubernetes CA.
    pub k8s: CertAndKey,
    /// Kubernetes front-proxy (aggregator) CA.
    pub k8saggregator: CertAndKey,
    /// Kubernetes service-account signing key.
    pub k8sserviceaccount: KeyOnly,
    /// Talos OS CA (apid, trustd, talosctl clients).
    pub os: CertAndKey,
}

/// A freshly minted certificate and key, in PEM (not base64).
pub struct Minted {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM (PKCS#8).
    pub key_pem: Secret,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field("key_pem", &self.key_pem)
            .finish_non_exhaustive()
    }
}

/// Ten years, the validity Talos gives its CAs.
const CA_VALIDITY: Duration = Duration::days(3650);

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| Error::Random(e.to_string()))?;
    Ok(buf)
}

/// A token of the form `[a-z0-9]{6}.[a-z0-9]{16}`, as kubeadm and Talos use.
fn token() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = random_bytes::<22>()?;
    let mut out = String::with_capacity(23);
    for (i, b) in bytes.iter().enumerate() {
        if i == 6 {
            out.push('.');
        }
        out.push(ALPHABET[usize::from(*b) % ALPHABET.len()] as char);
    }
    Ok(out)
}

fn ca(
    common_name: &str,
    alg: &'static SignatureAlgorithm,
    field: &'static str,
) -> Result<CertAndKey> {
    let key = KeyPair::generate_for(alg).map_err(|source| Error::Crypto { field, source })?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    let cert = params
        .self_signed(&key)
        .map_err(|source| Error::Crypto { field, source })?;
    Ok(CertAndKey {
        crt: B64.encode(cert.pem()),
        key: Secret::new(B64.encode(key.serialize_pem())),
    })
}

impl SecretsBundle {
    /// Generates a new bundle: random identities and tokens, and new CAs (Ed25519 for the OS CA,
    /// ECDSA P-256 for the others, as current Talos does).
    ///
    /// # Errors
    /// Fails only when the system random source or key generation fails.
    pub fn generate() -> Result<Self> {
        let sa_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            Error::Crypto {
                field: "certs.k8sserviceaccount.key",
                source,
            }
        })?;
        Ok(Self {
            cluster: ClusterIdentity {
                id: B64.encode(random_bytes::<32>()?),
                secret: Secret::new(B64.encode(random_bytes::<32>()?)),
            },
            secrets: BundleSecrets {
                bootstraptoken: Secret::new(token()?),
                secretboxencryptionsecret: Secret::new(B64.encode(random_bytes::<32>()?)),
                aescbcencryptionsecret: None,
            },
            trustdinfo: TrustdInfo {
                token: Secret::new(token()?),
            },
            certs: BundleCerts {
                etcd: ca("etcd", &rcgen::PKCS_ECDSA_P256_SHA256, "certs.etcd")?,
                k8s: ca("kubernetes", &rcgen::PKCS_ECDSA_P256_SHA256, "certs.k8s")?,
                k8saggregator: ca("", &rcgen::PKCS_ECDSA_P256_SHA256, "certs.k8saggregator")?,
                k8sserviceaccount: KeyOnly {
                    key: Secret::new(B64.encode(sa_key.serialize_pem())),
                },
                os: ca("talos", &rcgen::PKCS_ED25519, "certs.os")?,
            },
        })
    }
}

/// Decodes one base64-of-PEM field of the bundle.
///
/// Talos labels Ed25519 keys `ED25519 PRIVATE KEY` (PKCS#8 inside); that label is normalised to
/// `PRIVATE KEY` so standard parsers accept it.
///
/// # Errors
/// [`Error::Encoding`] when the field is not base64 of UTF-8 text.
pub fn decode_pem(field: &'static str, b64: &str) -> Result<Zeroizing<String>> {
    let bytes = Zeroizing::new(
        B64.decode(b64.trim())
            .map_err(|_| Error::Encoding { field })?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::Encoding { field })?;
    if !text.contains("-----BEGIN ") {
        return Err(Error::Encoding { field });
    }
    Ok(Zeroizing::new(
        text.replace("ED25519 PRIVATE KEY", "PRIVATE KEY"),
    ))
}

/// What a minted certificate is for.
#[derive(Debug, Clone)]
pub enum Usage<'a> {
    /// A client certificate whose Organization lists Talos roles (e.g. `os:admin`).
    Client {
        /// Talos roles, written as Organization values.
        roles: &'a [&'a str],
    },
    /// A server certificate for the given addresses and DNS names.
    Server {
        /// IP SANs.
        ips: &'a [IpAddr],
        /// DNS SANs.
        dns: &'a [String],
    },
}

/// Mints a certificate signed by a CA of the bundle, valid from one hour ago for `ttl`.
///
/// # Errors
/// [`Error::Encoding`] or [`Error::Crypto`] when the CA cannot be read or signing fails.
pub fn mint(
    ca: &CertAndKey,
    ca_field: &'static str,
    common_name: &str,
    usage: &Usage<'_>,
    ttl: Duration,
) -> Result<Minted> {
    let ca_crt = decode_pem(ca_field, &ca.crt)?;
    let ca_key_pem = decode_pem(ca_field, ca.key.expose())?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|source| Error::Crypto {
        field: ca_field,
        source,
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_crt, ca_key).map_err(|source| Error::Crypto {
        field: ca_field,
        source,
    })?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|source| Error::Crypto {
        field: ca_field,
        source,
    })?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    match usage {
        Usage::Client { roles } => {
            for role in *roles {
                dn.push(DnType::OrganizationName, *role);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Usage::Server { ips, dns } => {
            params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
            for name in *dns {
                let name = name.clone().try_into().map_err(|source| Error::Crypto {
                    field: ca_field,
                    source,
                })?;
                params.subject_alt_names.push(SanType::DnsName(name));
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
    }
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + ttl;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| Error::Crypto {
            field: ca_field,
            source,
        })?;
    Ok(Minted {
        cert_pem: cert.pem(),
        key_pem: Secret::new(ed25519_pkcs8_v1_pem(&key.serialize_der())),
    })
}

/// The PKCS#8 v2 prefix of an Ed25519 key (`OneAsymmetricKey` version 1, RFC 5958, with the
/// public key after the 32-byte seed); byte 1, the outer length, varies.
const ED25519_V2_PREFIX: [u8; 16] = [
    0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The PKCS#8 v1 prefix (`PrivateKeyInfo` version 0, RFC 8410 section 7): the 48-byte form
/// OpenSSL 3.0, curl and Python's ssl read (they refuse the v2 form with the public key).
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 key as a PKCS#8 v1 `PRIVATE KEY` PEM (any other DER is written as it is).
fn ed25519_pkcs8_v1_pem(der: &[u8]) -> String {
    // The outer length differs with the public key's encoding (ring writes `[1]` with 0x51,
    // RFC 5958's `[1] BIT STRING` gives 0x53): compare everything else of the prefix.
    let v2 = der.len() >= 48 && der[0] == 0x30 && der[2..16] == ED25519_V2_PREFIX[2..16];
    let der = Zeroizing::new(match v2.then(|| &der[16..]) {
        Some(rest) => {
            let mut v1 = ED25519_V1_PREFIX.to_vec();
            v1.extend_from_slice(&rest[..32]);
            v1
        }
        _ => der.to_vec(),
    });
    let b64 = Zeroizing::new(B64.encode(&*der));
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Mints an `os:admin` client certificate from the bundle's OS CA, valid for one year (the
/// talosctl default).
///
/// # Errors
/// As [`mint`].
pub fn admin_client(bundle: &SecretsBundle) -> Result<Minted> {
    mint(
        &bundle.certs.os,
        "certs.os",
        "vixen",
        &Usage::Client {
            roles: &["os:admin"],
        },
        Duration::days(365),
    )
}

/// Base64 of a PEM string, the encoding talosconfig and machine configs use.
pub fn b64(pem: &str) -> String {
    B64.encode(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn generated_bundle_has_ed25519_os_ca_and_tokens_of_kubeadm_shape() {
        let bundle = SecretsBundle::generate().unwrap();
        let pem = decode_pem("certs.os", &bundle.certs.os.crt).unwrap();
        let (_, pem) = parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert!(cert.is_ca());
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ED25519
        );
        let tok = bundle.trustdinfo.token.expose();
        assert_eq!(tok.len(), 23);
        assert_eq!(&tok[6..7], ".");
        assert_ne!(bundle.trustdinfo.token, bundle.secrets.bootstraptoken);
    }

    #[test]
    fn admin_client_cert_is_signed_by_os_ca_with_admin_role() {
        let bundle = SecretsBundle::generate().unwrap();
        let minted = admin_client(&bundle).unwrap();
        let (_, pem) = parse_x509_pem(minted.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|o| o.as_str().unwrap().to_string())
            .collect();
        assert_eq!(orgs, ["os:admin"]);
        let ca_pem = decode_pem("certs.os", &bundle.certs.os.crt).unwrap();
        let (_, ca_pem) = parse_x509_pem(ca_pem.as_bytes()).unwrap();
        let ca = ca_pem.parse_x509().unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    #[test]
    fn talos_ed25519_key_label_is_accepted() {
        let bundle = SecretsBundle::generate().unwrap();
        let pem = decode_pem("certs.os", bundle.certs.os.key.expose()).unwrap();
        let talos_style = pem.replace("PRIVATE KEY", "ED25519 PRIVATE KEY");
        let mut ca = bundle.certs.os.clone();
        ca.key = Secret::new(b64(&talos_style));
        let ips = ["127.0.10.1".parse().unwrap()];
        mint(
            &ca,
            "certs.os",
            "node",
            &Usage::Server {
                ips: &ips,
                dns: &[],
            },
            Duration::days(1),
        )
        .unwrap();
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let bundle = SecretsBundle::generate().unwrap();
        let shown = format!("{bundle:?}");
        assert!(!shown.contains(bundle.certs.os.key.expose()));
        assert!(!shown.contains(bundle.trustdinfo.token.expose()));
        assert!(shown.contains("<redacted>"));
    }
}
