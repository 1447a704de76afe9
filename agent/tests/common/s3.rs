//! moto's S3 server as a test peer, and reading back what vixen stored in it: signed `curl`
//! for the bucket, `age -d` and `etcdctl snapshot status` for a snapshot.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{KillOnDrop, example};

/// The access key moto is given in the tests (not a real credential).
pub const ACCESS_KEY: &str = "vixen-lab";
/// Its secret part.
pub const SECRET_KEY: &str = "lab-secret-not-real";

/// moto's S3 server on `ip`, stopped when dropped.
pub struct S3Peer {
    _child: KillOnDrop,
    /// `http://ip:port`.
    pub endpoint: String,
}

impl S3Peer {
    /// Starts it and creates `bucket`.
    pub fn start(ip: &str, bucket: &str) -> S3Peer {
        let port = std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", ip, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (tests/deps.sh installs moto[server] from PyPI)");
        let peer = S3Peer {
            _child: KillOnDrop(child),
            endpoint: format!("http://{ip}:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while peer.curl(&["-X", "PUT", &format!("/{bucket}")]).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "moto did not start at {ip}:{port}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        peer
    }

    /// `curl` against the peer: (status, body).
    pub fn curl(&self, args: &[&str]) -> (u16, Vec<u8>) {
        let path = args.last().unwrap();
        let mut cmd = Command::new("curl");
        // Signed as the agent signs (moto keeps uploaded objects private).
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", "vixen-lab:lab-secret-not-real"])
            .args(&args[..args.len() - 1])
            .arg(format!("{}{path}", self.endpoint));
        let out = cmd.output().unwrap();
        let text = out.stdout;
        let cut = text.iter().rposition(|b| *b == b'\n').unwrap_or(0);
        let code = String::from_utf8_lossy(&text[cut..])
            .trim()
            .parse()
            .unwrap_or(0);
        (code, text[..cut].to_vec())
    }

    /// Object keys under `prefix`, as the bucket lists them.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (code, body) = self.curl(&[&format!("/{bucket}?list-type=2&prefix={prefix}")]);
        assert_eq!(code, 200);
        let xml = String::from_utf8_lossy(&body).into_owned();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

/// Decrypts `cipher` with the demo key (`age -d`) and asks etcd's own tool about it; returns
/// the key count `etcdctl snapshot status` reports.
pub fn decrypt_and_status(cipher: &[u8], dir: &Path) -> u64 {
    let enc = dir.join("snap.db.age");
    let db = dir.join("snap.db");
    let _ = std::fs::remove_file(&db);
    std::fs::write(&enc, cipher).unwrap();
    let out = Command::new("age")
        .args(["-d", "-i"])
        .arg(example().join("demo.agekey"))
        .arg("-o")
        .arg(&db)
        .arg(&enc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl snapshot status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["totalKey"].as_u64().unwrap()
}
