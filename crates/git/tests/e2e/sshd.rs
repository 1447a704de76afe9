//! A throwaway `sshd` on 127.0.0.1 with its own host key, user key and config in a temp dir.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixture::keygen;

/// Kills sshd when dropped.
pub struct Sshd {
    pub port: u16,
    /// `known_hosts` listing this server's host key as `[127.0.0.1]:port`.
    pub known_hosts: PathBuf,
    /// A private key that the server accepts.
    pub user_key: PathBuf,
    /// The server's host public key line (`ssh-ed25519 AAAA...`).
    pub host_pub: String,
    child: Child,
}

impl Sshd {
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all("/run/sshd").unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let host_key = keygen(dir, "host_ed25519");
        let user_key = keygen(dir, "user_ed25519");
        let user_pub = std::fs::read_to_string(dir.join("user_ed25519.pub")).unwrap();
        std::fs::write(dir.join("authorized_keys"), user_pub).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\n\
                 AuthorizedKeysFile {}\nStrictModes no\nPermitRootLogin yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 LogLevel ERROR\n",
                host_key.display(),
                dir.join("authorized_keys").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_pub = std::fs::read_to_string(dir.join("host_ed25519.pub")).unwrap();
        let host_pub = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}\n")).unwrap();
        Self {
            port,
            known_hosts,
            user_key,
            host_pub,
            child,
        }
    }

    pub fn url(&self, repo: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, repo.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
