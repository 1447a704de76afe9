//! Helpers shared by the agent's test binaries.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use std::path::{Path, PathBuf};

#[allow(dead_code)]
pub mod kubeapi;
#[allow(dead_code)]
pub mod lab;
pub mod s3;

/// A child process, killed and reaped when dropped (a failing test leaves nothing running).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`: the status code (0 when nothing answers) and
/// the body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The homelab example repo.
pub fn example() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("../examples/homelab")
}

/// Copies a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The last `n` lines of a log file, headed by its path (for a failing assertion's message).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "\n--- {} ---\n{}",
        path.display(),
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}

/// The demo age recipient (examples/homelab's key).
pub const DEMO_RECIPIENT: &str = "age1px928ssmd9lk2w2hu5was6hxhx47npmhta4v0dd3whzj0xu4tc8sglqzkl";

/// `plain` (YAML) encrypted to the demo key by the real `sops`, every value or only those under
/// keys matching `encrypted_regex` (as a `.sops.yaml` creation rule would ask); `dir` holds the
/// plaintext for the call and nothing afterwards.
pub fn sops_encrypt(plain: &str, dir: &Path, encrypted_regex: Option<&str>) -> String {
    let src = dir.join(".plain-for-sops.yaml");
    std::fs::write(&src, plain).unwrap();
    let mut sops = std::process::Command::new("sops");
    sops.env("SOPS_DISABLE_VERSION_CHECK", "1")
        .args(["encrypt", "--age", DEMO_RECIPIENT]);
    if let Some(regex) = encrypted_regex {
        sops.args(["--encrypted-regex", regex]);
    }
    let out = sops
        .args(["--input-type", "yaml", "--output-type", "yaml"])
        .arg(&src)
        .output()
        .unwrap();
    std::fs::remove_file(&src).unwrap();
    assert!(
        out.status.success(),
        "sops: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
