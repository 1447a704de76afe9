//! A fake forge API on 127.0.0.1:0: records every request and answers POSTs from a script; GETs
//! of a commit's statuses list the statuses it accepted, shaped as each forge answers (GitHub:
//! `state`/`context`; Gitea: `status`/`context`, modules/structs/status.go; GitLab:
//! `status`/`name`, lib/api/commit_statuses.rb), with increasing ids.

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

type Script = Arc<Mutex<VecDeque<(u16, Vec<(&'static str, String)>, Option<String>)>>>;
type Accepted = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
    pub at: std::time::Instant,
}

/// Scripted answers to POSTs: (status, headers, body). When the script is empty, 201.
pub struct MockForge {
    pub base: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    script: Script,
    accepted: Accepted,
    task: JoinHandle<()>,
}

/// The commit id in a path (its 40-hex segment).
fn sha_of(path: &str) -> String {
    path.split('/')
        .find(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_default()
        .to_owned()
}

/// A stored status as the forge of `path` lists it.
fn listed(path: &str, id: usize, posted: &serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({ "id": id, "description": posted["description"] });
    if path.starts_with("/api/v4/") {
        v["status"] = posted["state"].clone();
        v["name"] = posted["name"].clone();
    } else if path.starts_with("/api/v1/") {
        v["status"] = posted["state"].clone();
        v["context"] = posted["context"].clone();
    } else {
        v["state"] = posted["state"].clone();
        v["context"] = posted["context"].clone();
    }
    v
}

impl MockForge {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::default();
        let accepted: Accepted = Arc::default();
        let (r2, s2, a2) = (requests.clone(), script.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, s, a) = (r2.clone(), s2.clone(), a2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (r, s, a) = (r.clone(), s.clone(), a.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body.collect().await.unwrap().to_bytes();
                            let path = parts.uri.path().to_owned();
                            let json: serde_json::Value =
                                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                            r.lock().unwrap().push(Recorded {
                                method: parts.method.to_string(),
                                path: path.clone(),
                                headers: parts.headers,
                                body: json.clone(),
                                at: std::time::Instant::now(),
                            });
                            if parts.method == http::Method::GET {
                                let sha = sha_of(&path);
                                let list: Vec<_> = a
                                    .lock()
                                    .unwrap()
                                    .iter()
                                    .enumerate()
                                    .filter(|(_, (s, _))| *s == sha)
                                    .map(|(i, (_, v))| listed(&path, i + 1, v))
                                    .collect();
                                let body = serde_json::to_vec(&list).unwrap();
                                return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                    body,
                                ))));
                            }
                            let (status, headers, body) =
                                s.lock().unwrap().pop_front().unwrap_or((201, vec![], None));
                            if (200..300).contains(&status) {
                                a.lock().unwrap().push((sha_of(&path), json));
                            }
                            let body = body.unwrap_or_else(|| r#"{"message":"scripted"}"#.into());
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
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
            accepted,
            task,
        }
    }

    pub fn answer(&self, status: u16, headers: &[(&'static str, &str)]) {
        let h = headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.script.lock().unwrap().push_back((status, h, None));
    }

    /// Answers the next POST with `status` and this body.
    pub fn answer_body(&self, status: u16, body: &str) {
        let b = Some(body.to_owned());
        self.script.lock().unwrap().push_back((status, vec![], b));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The statuses it accepted (answered 2xx), as posted.
    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The POSTs received so far.
    pub fn posts(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }
}

impl Drop for MockForge {
    fn drop(&mut self) {
        self.task.abort();
    }
}
