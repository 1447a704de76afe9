//! One small HTTP/1 server for everything the cluster asks of the agent:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz` | 200 while the process serves (liveness) |
//! | `GET /readyz` | 200 once the first reconcile attempt finished (readiness) |
//! | `POST <webhook path>` | verified push webhook: 202 and an immediate poll (on a standby: the push is recorded for the leader first, 503 if that fails), else 401 |

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, RwLock, watch};

use super::metrics::Metrics;
use super::relay::Relay;

/// Largest webhook body accepted.
const MAX_BODY: usize = 5 * 1024 * 1024;

/// What the server shares with the reconcile loop.
pub struct Shared {
    /// Metrics.
    pub metrics: Metrics,
    /// Set once the first reconcile attempt finished.
    pub ready: AtomicBool,
    /// Woken by a verified push.
    pub poll_now: Notify,
    /// The webhook secret (re-read when its file changes); `None` disables the webhook path.
    pub webhook_secret: RwLock<Option<vixen_forge::Secret>>,
    /// Path the webhook is served on.
    pub webhook_path: String,
    /// With election: how a standby tells the leader about a push.
    pub relay: Option<Relay>,
}

impl Shared {
    /// Fresh state with webhooks on `webhook_path`.
    pub fn new(webhook_path: &str, relay: Option<Relay>) -> Self {
        Self {
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
            poll_now: Notify::new(),
            webhook_secret: RwLock::new(None),
            webhook_path: webhook_path.to_owned(),
            relay,
        }
    }
}

/// Serves until `shutdown` turns true.
///
/// # Errors
/// Only an error of `accept` ends the server early.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(req, &shared).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
}

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

async fn respond(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n", plain),
        (&Method::GET, "/readyz") => {
            if shared.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n", plain)
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "first reconcile not finished\n",
                    plain,
                )
            }
        }
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            shared.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (&Method::POST, p) if p == shared.webhook_path => webhook(req, shared).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n", plain),
    }
}

async fn webhook(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "", "text/plain"),
    };
    let secret = shared.webhook_secret.read().await.clone();
    let Some(secret) = secret else {
        shared
            .metrics
            .webhooks
            .get_or_create(&vec![("result", "disabled".into())])
            .inc();
        return text(
            StatusCode::NOT_FOUND,
            "webhooks are not configured\n",
            "text/plain",
        );
    };
    let out = vixen_forge::handle_webhook(&parts.headers, &body, &secret);
    let result = if out.event.is_some() {
        "accepted"
    } else if out.status == 401 {
        "rejected"
    } else {
        "ignored"
    };
    shared
        .metrics
        .webhooks
        .get_or_create(&vec![("result", result.into())])
        .inc();
    if let Some(push) = &out.event {
        // A standby's own loop does not poll: the leader must hear of it.
        if let Some(relay) = shared.relay.as_ref().filter(|r| r.standby()) {
            let relays = |result: &str| {
                shared
                    .metrics
                    .webhook_relays
                    .get_or_create(&vec![("result", result.into())])
                    .inc();
            };
            if let Err(e) = relay.forward(push).await {
                relays("failed");
                tracing::warn!(error = %e, "webhook on a standby: the leader could not be told; answering 503 so the forge retries");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this replica is a standby and could not reach the leader; retry\n",
                    "text/plain",
                );
            }
            relays("sent");
        } else {
            shared.poll_now.notify_one();
        }
    }
    // The forge shows this body in its delivery log: it says why (never a secret).
    text(
        StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        out.body,
        "text/plain",
    )
}
