//! The node side of TLS: maintenance mode's self-signed certificate without client auth, and the
//! configured node's apid certificate (signed by the OS CA) that requires a client certificate
//! from the same CA. Connections carry the client's roles (its Organization values) to handlers,
//! and are cut when the node reboots, as a real reboot cuts them.

use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use vixen_talos::tls::{certs_from_pem, key_from_pem, provider, root_store};

use crate::{Error, Result};

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

fn finish(mut cfg: ServerConfig) -> Arc<ServerConfig> {
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// Maintenance mode: a throwaway self-signed certificate, no client authentication.
pub(crate) fn maintenance_config(addrs: &[IpAddr]) -> Result<Arc<ServerConfig>> {
    let names: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let cert = rcgen::generate_simple_self_signed(names).map_err(tls_err)?;
    let chain = certs_from_pem("self-signed", &cert.cert.pem()).map_err(tls_err)?;
    let key = key_from_pem("self-signed", &cert.signing_key.serialize_pem()).map_err(tls_err)?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    Ok(finish(cfg))
}

/// Configured mode: apid's certificate signed by the OS CA (`machine.ca`), for all the node's
/// addresses and its hostname; clients must present a certificate signed by the same CA.
pub(crate) fn configured_config(
    ca: &vixen_pki::CertAndKey,
    addrs: &[IpAddr],
    hostname: &str,
) -> Result<Arc<ServerConfig>> {
    let dns: Vec<String> = if hostname.is_empty() {
        vec![]
    } else {
        vec![hostname.to_string()]
    };
    let usage = vixen_pki::Usage::Server {
        ips: addrs,
        dns: &dns,
    };
    let minted = vixen_pki::mint(
        ca,
        "machine.ca",
        hostname,
        &usage,
        time::Duration::days(365),
    )
    .map_err(tls_err)?;
    let ca_pem = vixen_pki::decode_pem("machine.ca.crt", &ca.crt).map_err(tls_err)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(&ca_pem).map_err(tls_err)?),
        provider(),
    )
    .build()
    .map_err(tls_err)?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs_from_pem("apid", &minted.cert_pem).map_err(tls_err)?,
            key_from_pem("apid", minted.key_pem.expose()).map_err(tls_err)?,
        )
        .map_err(tls_err)?;
    Ok(finish(cfg))
}

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    /// Roles from the client certificate's Organization; `None` without a certificate.
    pub roles: Option<Vec<String>>,
    /// The client certificate's Common Name (who called), if any.
    pub client: Option<String>,
}

/// An accepted TLS connection that fails as soon as its node goes down.
pub(crate) struct TlsConn {
    stream: TlsStream<TcpStream>,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    info: PeerInfo,
}

impl TlsConn {
    fn check(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        self.cut
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| std::io::Error::new(std::io::ErrorKind::ConnectionReset, "node went down"))
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// Roles (Organization values) and Common Name of a DER client certificate.
fn subject_of(der: &[u8]) -> (Vec<String>, Option<String>) {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| {
            let subject = cert.subject();
            let roles = subject
                .iter_organization()
                .filter_map(|o| o.as_str().ok().map(str::to_string))
                .collect();
            let name = subject
                .iter_common_name()
                .find_map(|n| n.as_str().ok().map(str::to_string));
            (roles, name)
        })
        .unwrap_or_default()
}

/// Binds every address (port 50000) and returns a stream of TLS connections that ends, and
/// whose connections fail, when `cut` is cancelled.
pub(crate) async fn listen(
    node: &str,
    addrs: &[IpAddr],
    config: Arc<ServerConfig>,
    cut: CancellationToken,
) -> Result<mpsc::Receiver<std::io::Result<TlsConn>>> {
    let mut listeners = Vec::new();
    for addr in addrs {
        let sa = SocketAddr::new(*addr, vixen_talos::API_PORT);
        let l = bind_retrying(sa).await.map_err(|source| Error::Listen {
            node: node.to_string(),
            addr: sa.to_string(),
            source,
        })?;
        listeners.push(l);
    }
    let (tx, rx) = mpsc::channel(16);
    let acceptor = TlsAcceptor::from(config);
    for l in listeners {
        let (tx, acceptor, cut) = (tx.clone(), acceptor.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    () = cut.cancelled() => return,
                    r = l.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                let (tx, acceptor, cut) = (tx.clone(), acceptor.clone(), cut.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let handshake = tokio::select! {
                        () = cut.cancelled() => return,
                        r = acceptor.accept(tcp) => r,
                    };
                    // Handshake failures (no or wrong client certificate) never reach a handler.
                    let Ok(stream) = handshake else { return };
                    let subject = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| subject_of(c.as_ref()));
                    let (roles, client) = match subject {
                        Some((roles, client)) => (Some(roles), client),
                        None => (None, None),
                    };
                    let conn = TlsConn {
                        stream,
                        cut: Box::pin(cut.cancelled_owned()),
                        info: PeerInfo { roles, client },
                    };
                    let _ = tx.send(Ok(conn)).await;
                });
            }
        });
    }
    Ok(rx)
}

/// A node that just went down may still hold its port for a moment; retry briefly.
async fn bind_retrying(sa: SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.set_reuseaddr(true)?;
        match sock.bind(sa).and_then(|()| sock.listen(128)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
}
