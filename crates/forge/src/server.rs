//! The webhook receiver: [`handle_webhook`] decides the answer to one request (usable from any
//! HTTP server), and [`serve_webhooks`] is a minimal hyper 1.x HTTP/1 server around it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{PushEvent, Secret, verify_push};

/// Largest accepted body (GitHub caps payloads at 25 MB; pushes are far smaller).
const MAX_BODY: usize = 5 * 1024 * 1024;

/// What to answer, and the push to act on (only when verified).
#[derive(Debug)]
pub struct WebhookResponse {
    /// HTTP status: 202 for a verified push or an ignored event, 200 for a ping, 401 when
    /// unverified, 400 for a request that is not a webhook or a payload that is not a push.
    pub status: u16,
    /// A short plain-text reason for the forge's delivery log (ends with a newline; never holds
    /// the secret or a signature).
    pub body: String,
    /// A fixed label for metrics: `accepted`, or [`crate::WebhookError::category`].
    pub outcome: &'static str,
    /// The verified push, if any.
    pub event: Option<PushEvent>,
}

/// Verifies one request. The caller answers `status` with `body` (`text/plain`) and triggers a
/// reconcile only for `event`.
pub fn handle_webhook(headers: &HeaderMap, body: &[u8], secret: &Secret) -> WebhookResponse {
    match verify_push(headers, body, secret) {
        Ok(event) => {
            tracing::info!(forge = %event.forge, repo = %event.repo, reference = %event.reference, after = %event.after, "verified push webhook");
            WebhookResponse {
                status: 202,
                body: format!(
                    "accepted: {} push of {} at {}\n",
                    event.forge, event.reference, event.after
                ),
                outcome: "accepted",
                event: Some(event),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, category = e.category(), "webhook not acted on");
            WebhookResponse {
                status: e.status_code(),
                body: format!("{e}\n"),
                outcome: e.category(),
                event: None,
            }
        }
    }
}

/// Serves webhooks on `listener` until `shutdown` completes. Every verified push calls `on_push`
/// (keep it quick: send on a channel); anything else triggers nothing. Only `POST` is accepted,
/// on any path.
///
/// # Errors
/// Only an error of `accept` itself ends the server early.
pub async fn serve_webhooks<F>(
    listener: TcpListener,
    secret: Secret,
    on_push: F,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    F: Fn(PushEvent) + Send + Sync + 'static,
{
    let state = Arc::new((secret, on_push));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(req, &state.0, &state.1).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "webhook connection ended with an error");
            }
        });
    }
}

async fn respond<F: Fn(PushEvent)>(
    req: Request<Incoming>,
    secret: &Secret,
    on_push: &F,
) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "webhooks are POST requests\n".into(),
        );
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let why = format!("the body is larger than {} MiB\n", MAX_BODY >> 20);
            return reply(StatusCode::PAYLOAD_TOO_LARGE, why);
        }
    };
    let out = handle_webhook(&parts.headers, &body, secret);
    if let Some(event) = out.event {
        on_push(event);
    }
    let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply(status, out.body)
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
