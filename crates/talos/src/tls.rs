//! TLS for the Talos API: mTLS with a talosconfig's CA/cert/key, and the maintenance-mode config
//! (no client certificate, no server verification) used only for maintenance-mode calls.
//!
//! The gRPC channel runs over our own rustls connector so that both modes share one code path.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::Credentials;
use crate::error::{Error, Result};

/// The crypto provider used everywhere in vixen (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// All certificates of a PEM text.
///
/// # Errors
/// [`Error::Tls`] when the text holds no certificate.
pub fn certs_from_pem(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Tls(format!("{what}: unreadable PEM")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{what}: no certificate")));
    }
    Ok(certs)
}

/// The first private key of a PEM text (Talos' `ED25519 PRIVATE KEY` label is accepted).
///
/// # Errors
/// [`Error::Tls`] when no key is found. The error never includes the key.
pub fn key_from_pem(what: &str, pem: &str) -> Result<PrivateKeyDer<'static>> {
    let pem = pem.replace("ED25519 PRIVATE KEY", "PRIVATE KEY");
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| Error::Tls(format!("{what}: no private key")))
}

/// A root store holding the CA(s) of a PEM text.
///
/// # Errors
/// [`Error::Tls`] when a certificate cannot be added.
pub fn root_store(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem("ca", ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("ca: {e}")))?;
    }
    Ok(roots)
}

fn with_alpn(mut cfg: ClientConfig) -> Arc<ClientConfig> {
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// mTLS client config: trusts only the OS CA and presents the client certificate.
///
/// # Errors
/// [`Error::Tls`] when the credentials do not load.
pub fn client_config(creds: &Credentials) -> Result<Arc<ClientConfig>> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(root_store(&creds.ca_pem)?)
        .with_client_auth_cert(
            certs_from_pem("crt", &creds.cert_pem)?,
            key_from_pem("key", &creds.key_pem)?,
        )
        .map_err(|e| Error::Tls(format!("client certificate: {e}")))?;
    Ok(with_alpn(cfg))
}

/// Maintenance-mode client config: no client certificate and no server verification (Talos
/// maintenance mode serves a self-signed certificate; trust is on first use, talos#9521).
/// Handshake signatures are still checked, so the peer must hold the key of the cert it shows.
pub fn maintenance_config() -> Arc<ClientConfig> {
    let provider = provider();
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
        .with_no_client_auth();
    with_alpn(cfg)
}

/// Accepts any server certificate; used only for maintenance-mode connections.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS server name for an endpoint host: an IP address when it parses as one.
///
/// # Errors
/// [`Error::InvalidEndpoint`] when the host is neither an IP nor a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).map_err(|_| Error::InvalidEndpoint(host.to_string()))
}
