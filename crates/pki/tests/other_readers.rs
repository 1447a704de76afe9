//! The keys vixen mints (talosconfig client certificates, the lab's kubeconfigs and serving
//! certificates) are read by the tools users point at them: OpenSSL 3.0 (`openssl pkey`, and so
//! curl built on it) and Python's `ssl`. The fault: a PKCS#8 v2 Ed25519 key (with the public
//! key attribute), which these refuse. The form they read is the 48-byte PKCS#8 v1 DER
//! `302e020100300506032b657004220420` + the 32-byte seed.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use vixen_pki::{SecretsBundle, Usage, mint};

fn der_of(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn minted_files(dir: &Path, usage: &Usage<'_>) -> (std::path::PathBuf, std::path::PathBuf) {
    let bundle = SecretsBundle::generate().unwrap();
    let minted = mint(
        &bundle.certs.os,
        "certs.os",
        "admin",
        usage,
        time::Duration::days(1),
    )
    .unwrap();
    let der = der_of(minted.key_pem.expose());
    assert_eq!(der.len(), 48, "PKCS#8 v1 Ed25519 is 48 bytes");
    assert_eq!(
        hex(&der[..16]),
        "302e020100300506032b657004220420",
        "PKCS#8 v1 prefix"
    );
    let (crt, key) = (dir.join("admin.crt"), dir.join("admin.key"));
    std::fs::write(&crt, &minted.cert_pem).unwrap();
    std::fs::write(&key, minted.key_pem.expose()).unwrap();
    (crt, key)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn openssl_and_python_ssl_read_a_minted_client_key() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = minted_files(
        dir.path(),
        &Usage::Client {
            roles: &["os:admin"],
        },
    );
    let out = Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl pkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The certificate and the key belong together, as curl --cert/--key would check.
    let script = "import ssl,sys\nc=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\nc.load_cert_chain(sys.argv[1], sys.argv[2])\nprint('ok')";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&crt)
        .arg(&key)
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "python ssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openssl_reads_a_minted_serving_key() {
    let dir = tempfile::tempdir().unwrap();
    let ips = ["127.155.0.1".parse().unwrap()];
    let (_, key) = minted_files(
        dir.path(),
        &Usage::Server {
            ips: &ips,
            dns: &["localhost".to_owned()],
        },
    );
    let out = Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
