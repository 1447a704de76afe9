//! A fake forge API on 127.0.0.1:0: records every request and answers from a script.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

type Script = Arc<Mutex<VecDeque<(u16, Vec<(&'static str, String)>)>>>;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
    pub at: std::time::Instant,
}

/// Scripted answers: (status, headers). When the script is empty, 201.
pub struct MockForge {
    pub base: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    script: Script,
    task: JoinHandle<()>,
}

impl MockForge {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::default();
        let (r2, s2) = (requests.clone(), script.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, s) = (r2.clone(), s2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (r, s) = (r.clone(), s.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body.collect().await.unwrap().to_bytes();
                            r.lock().unwrap().push(Recorded {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                headers: parts.headers,
                                body: serde_json::from_slice(&bytes)
                                    .unwrap_or(serde_json::Value::Null),
                                at: std::time::Instant::now(),
                            });
                            let (status, headers) =
                                s.lock().unwrap().pop_front().unwrap_or((201, vec![]));
                            let mut resp = Response::new(Full::new(Bytes::from_static(
                                b"{\"message\":\"scripted\"}",
                            )));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            for (k, v) in headers {
                                resp.headers_mut().insert(k, v.parse().unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            base,
            requests,
            script,
            task,
        }
    }

    pub fn answer(&self, status: u16, headers: &[(&'static str, &str)]) {
        let h = headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.script.lock().unwrap().push_back((status, h));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for MockForge {
    fn drop(&mut self) {
        self.task.abort();
    }
}
