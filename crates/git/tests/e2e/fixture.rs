//! A bare "remote" repository and a work tree that commits and pushes to it with the git CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Makes an ed25519 key pair `dir/name` and `dir/name.pub`; returns the private key path.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path));
    path
}

/// The remote (`srv/repo.git`) and a clone to commit from (`work`).
pub struct Remote {
    pub dir: TempDir,
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Remote {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("srv/repo.git");
        let work = dir.path().join("work");
        run(git(dir.path())
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&bare));
        run(git(&bare).args(["config", "uploadpack.allowReachableSHA1InWant", "true"]));
        run(git(dir.path())
            .args(["init", "-q", "-b", "main"])
            .arg(&work));
        Self { dir, bare, work }
    }

    /// Writes files, commits (signed with `signing_key` if given), pushes; returns the commit id.
    pub fn commit(&self, files: &[(&str, &str)], msg: &str, signing_key: Option<&Path>) -> String {
        for (name, content) in files {
            let p = self.work.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        run(git(&self.work).args(["add", "-A"]));
        let mut c = git(&self.work);
        if let Some(key) = signing_key {
            c.args(["-c", "gpg.format=ssh", "-c"])
                .arg(format!("user.signingkey={}", key.display()));
            c.args(["commit", "-q", "-S", "-m", msg]);
        } else {
            c.args(["commit", "-q", "-m", msg]);
        }
        run(&mut c);
        self.push(false);
        self.head()
    }

    /// Rewrites the last commit (new content, same parent) and force-pushes it.
    pub fn amend_and_force_push(&self, files: &[(&str, &str)]) -> String {
        for (name, content) in files {
            std::fs::write(self.work.join(name), content).unwrap();
        }
        run(git(&self.work).args(["commit", "-q", "-a", "--amend", "-m", "rewritten"]));
        self.push(true);
        self.head()
    }

    pub fn push(&self, force: bool) {
        let mut c = git(&self.work);
        c.arg("push").arg("-q");
        if force {
            c.arg("-f");
        }
        run(c.arg(&self.bare).arg("main"));
    }

    pub fn head(&self) -> String {
        run(git(&self.work).args(["rev-parse", "HEAD"]))
    }

    pub fn tag(&self, name: &str) {
        run(git(&self.work).args(["tag", "-a", name, "-m", name]));
        run(git(&self.work)
            .arg("push")
            .arg("-q")
            .arg(&self.bare)
            .arg(name));
    }
}

/// `git` with a fixed identity and no user or system config.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com");
    c
}
