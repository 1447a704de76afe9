//! A tiny HTTP/1.1 server on 127.0.0.1 that checks basic auth and forwards to `git http-backend`
//! (CGI), logging every request so tests can assert what the client asked for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub target: String,
    pub status: u16,
}

/// Stops the server when dropped.
pub struct GitHttpServer {
    ip: String,
    pub port: u16,
    pub log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GitHttpServer {
    /// Serves the repositories under `root`, requiring `user:password`.
    pub fn start(root: &Path, user: &str, password: &str) -> Self {
        let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        Self::serve("127.0.0.1", root, Some(expected))
    }

    /// Serves the repositories under `root` to anyone (a public repository), on `ip`.
    #[allow(dead_code)] // used by the agent's install test, which includes this file
    pub fn start_public(ip: &str, root: &Path) -> Self {
        Self::serve(ip, root, None)
    }

    fn serve(ip: &str, root: &Path, expected: Option<String>) -> Self {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let ip = ip.to_owned();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, log2, stop2) = (root.to_owned(), log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, log, expected) = (root.clone(), log2.clone(), expected.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &root, &expected, &log);
                });
            }
        });
        Self {
            ip,
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://{}:{}/{repo}", self.ip, self.port)
    }

    pub fn take_log(&self) -> Vec<Logged> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((self.ip.as_str(), self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(
    mut stream: TcpStream,
    root: &PathBuf,
    expected_auth: &Option<String>,
    log: &Mutex<Vec<Logged>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let body = if let Some(len) = header("content-length") {
            let mut b = vec![0; len.parse().unwrap_or(0)];
            reader.read_exact(&mut b)?;
            b
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            read_chunked(&mut reader)?
        } else {
            Vec::new()
        };
        if let Some(expected) = expected_auth
            && header("authorization").as_deref() != Some(expected.as_str())
        {
            log.lock().unwrap().push(Logged {
                method,
                target,
                status: 401,
            });
            stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\n\r\n",
            )?;
            continue;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let backend = Path::new(
            &String::from_utf8(Command::new("git").arg("--exec-path").output()?.stdout)
                .unwrap()
                .trim()
                .to_owned(),
        )
        .join("git-http-backend");
        let mut child = Command::new(backend)
            .env_clear()
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
            .env("CONTENT_LENGTH", body.len().to_string())
            .env(
                "HTTP_CONTENT_ENCODING",
                header("content-encoding").unwrap_or_default(),
            )
            .env(
                "HTTP_GIT_PROTOCOL",
                header("git-protocol").unwrap_or_default(),
            )
            .env("REMOTE_USER", "test")
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out)?;
        child.wait()?;
        let _ = writer.join();
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
            .unwrap_or((0, 0));
        let head = String::from_utf8_lossy(&out[..split.0]).into_owned();
        let cgi_body = &out[split.0 + split.1..];
        let mut status = 200u16;
        let mut resp = Vec::new();
        for l in head.lines() {
            if let Some(s) = l.strip_prefix("Status:") {
                status = s
                    .trim()
                    .split(' ')
                    .next()
                    .unwrap_or("200")
                    .parse()
                    .unwrap_or(500);
            } else if !l.is_empty() {
                resp.extend_from_slice(l.as_bytes());
                resp.extend_from_slice(b"\r\n");
            }
        }
        log.lock().unwrap().push(Logged {
            method,
            target: target.clone(),
            status,
        });
        let mut msg = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n",
            cgi_body.len()
        )
        .into_bytes();
        msg.extend_from_slice(&resp);
        msg.extend_from_slice(b"\r\n");
        msg.extend_from_slice(cgi_body);
        stream.write_all(&msg)?;
    }
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let n =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = vec![0; n + 2];
        if n == 0 {
            let mut end = String::new();
            reader.read_line(&mut end)?;
            return Ok(out);
        }
        reader.read_exact(&mut chunk)?;
        out.extend_from_slice(&chunk[..n]);
    }
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
