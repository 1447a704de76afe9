//! The repo is untrusted input: every file vixen reads from it goes through [`Sandbox`].
//!
//! ```text
//! "patches/a.yaml" ──check_relative──► components ──walk, one lstat per component──► inside?
//!     absolute, `..`, `.`, `//`: refused     symlink: its target is walked the same way,
//!                                            a target that leaves the root is refused
//!                                            before anything is opened there
//! ```
//!
//! The walk never touches a path outside the canonical repo root: a symlink's target is
//! resolved lexically against the directory that holds the link, so an outside file is never
//! opened, stat'ed or measured, and no error can tell whether it exists. Errors name the path
//! as the repo wrote it, never the link's target and never any content.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use zeroize::Zeroizing;

/// Largest file vixen reads from a repo (a config patch or a bundle is a few KiB).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Symlinks followed in one path before it is refused (Linux' own limit is 40).
const MAX_LINKS: usize = 40;

/// Why a path of the repo is refused. Names the path as written in the repo, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An absolute path (`/etc/passwd`).
    #[error("`{0}` is an absolute path; vixen reads only files inside the repo")]
    Absolute(String),
    /// A `..` component.
    #[error("`{0}` climbs out with `..`; vixen reads only files inside the repo")]
    ParentDir(String),
    /// Empty, `.` or empty components, a trailing `/`, a NUL byte.
    #[error("`{0}` is not a normalized relative path")]
    NotNormal(String),
    /// A symlink on the way leads outside the repo.
    #[error("`{0}` is a symlink (or goes through one) that leads outside the repo")]
    Outside(String),
    /// Too many symlinks.
    #[error("`{0}` goes through too many symlinks")]
    Loop(String),
    /// Nothing there.
    #[error("`{0}` does not exist")]
    Missing(String),
    /// Not a regular file (a folder, a device, a FIFO).
    #[error("`{0}` is not a regular file")]
    NotAFile(String),
    /// Not a folder.
    #[error("`{0}` is not a folder")]
    NotADir(String),
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("`{0}` is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge(String),
    /// Not UTF-8 text.
    #[error("`{0}` is not UTF-8 text")]
    NotText(String),
    /// Another I/O error (permissions...), by kind only.
    #[error("`{path}` cannot be read: {kind}")]
    Io {
        /// The path as written.
        path: String,
        /// What went wrong.
        kind: std::io::ErrorKind,
    },
}

impl Refusal {
    /// What the user should do about it.
    pub fn fix(&self) -> &'static str {
        match self {
            Refusal::Absolute(_) | Refusal::ParentDir(_) | Refusal::NotNormal(_) => {
                "write the path relative to the repo root, like patches/common.yaml"
            }
            Refusal::Outside(_) | Refusal::Loop(_) => {
                "replace the symlink by the file itself: vixen reads only files inside the repo"
            }
            Refusal::Missing(_) => "create it or correct the path",
            Refusal::NotAFile(_) => "point at a regular file",
            Refusal::NotADir(_) => "make it a folder",
            Refusal::TooLarge(_) => "split the file or keep large data out of the repo",
            Refusal::NotText(_) => "save the file as UTF-8",
            Refusal::Io { .. } => "fix the file's permissions",
        }
    }

    /// True when nothing is at the path (the only refusal an optional file may ignore).
    pub fn is_missing(&self) -> bool {
        matches!(self, Refusal::Missing(_))
    }
}

/// The repo root, canonicalized, and the only way this crate reads files.
#[derive(Clone, PartialEq, Eq)]
pub struct Sandbox {
    root: PathBuf,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sandbox({})", self.root.display())
    }
}

/// Checks that `rel` is a normalized relative path and splits it.
fn check_relative(rel: &str) -> Result<Vec<OsString>, Refusal> {
    let refuse = |r: fn(String) -> Refusal| Err(r(rel.to_string()));
    if rel.starts_with('/') || Path::new(rel).is_absolute() {
        return refuse(Refusal::Absolute);
    }
    if rel.is_empty() || rel.contains('\0') || rel.ends_with('/') {
        return refuse(Refusal::NotNormal);
    }
    let mut out = Vec::new();
    for part in rel.split('/') {
        match part {
            ".." => return refuse(Refusal::ParentDir),
            "" | "." => return refuse(Refusal::NotNormal),
            p => out.push(OsString::from(p)),
        }
    }
    Ok(out)
}

/// What the final component must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    File,
    Dir,
}

impl Sandbox {
    /// Opens the repo at `root` (canonicalized: the root itself may be reached via symlinks).
    ///
    /// # Errors
    /// The I/O error of canonicalizing the root.
    pub fn open(root: &Path) -> std::io::Result<Sandbox> {
        Ok(Sandbox {
            root: std::fs::canonicalize(root)?,
        })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `rel` inside the root, following symlinks only while they stay inside.
    fn resolve(&self, rel: &str, want: Want) -> Result<PathBuf, Refusal> {
        let mut todo: VecDeque<OsString> = check_relative(rel)?.into();
        let mut at: Vec<OsString> = Vec::new();
        let mut links = 0;
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => Refusal::Missing(rel.to_string()),
            kind => Refusal::Io {
                path: rel.to_string(),
                kind,
            },
        };
        while let Some(part) = todo.pop_front() {
            let here: PathBuf = self.root.join(at.iter().collect::<PathBuf>()).join(&part);
            let meta = std::fs::symlink_metadata(&here).map_err(io)?;
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Refusal::Loop(rel.to_string()));
                }
                // Reading the link itself is reading the repo; its target is only parsed.
                let target = std::fs::read_link(&here).map_err(io)?;
                let rest = if target.is_absolute() {
                    // Only an absolute link into the canonical root itself stays inside.
                    let inside = target
                        .strip_prefix(&self.root)
                        .map_err(|_| Refusal::Outside(rel.to_string()))?;
                    at.clear();
                    inside.to_path_buf()
                } else {
                    target
                };
                let mut parts = Vec::new();
                for c in rest.components() {
                    match c {
                        Component::Normal(p) => parts.push(Some(p.to_os_string())),
                        Component::ParentDir => parts.push(None),
                        Component::CurDir => {}
                        Component::RootDir | Component::Prefix(_) => {
                            return Err(Refusal::Outside(rel.to_string()));
                        }
                    }
                }
                // `..` in a link target is resolved against the link's folder, lexically,
                // and may not climb above the root.
                let mut fresh = VecDeque::new();
                for p in parts {
                    match p {
                        Some(p) => fresh.push_back(p),
                        None => {
                            if fresh.pop_back().is_none() && at.pop().is_none() {
                                return Err(Refusal::Outside(rel.to_string()));
                            }
                        }
                    }
                }
                while let Some(p) = fresh.pop_back() {
                    todo.push_front(p);
                }
                continue;
            }
            let last = todo.is_empty();
            if !last && !meta.is_dir() {
                return Err(Refusal::Missing(rel.to_string()));
            }
            at.push(part);
            if last {
                match want {
                    Want::File if !meta.is_file() => {
                        return Err(Refusal::NotAFile(rel.to_string()));
                    }
                    Want::File if meta.len() > MAX_FILE_BYTES => {
                        return Err(Refusal::TooLarge(rel.to_string()));
                    }
                    Want::Dir if !meta.is_dir() => return Err(Refusal::NotADir(rel.to_string())),
                    _ => {}
                }
            }
        }
        Ok(self.root.join(at.iter().collect::<PathBuf>()))
    }

    /// Checks that `rel` names a regular file inside the repo, without reading it.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn check_file(&self, rel: &str) -> Result<(), Refusal> {
        self.resolve(rel, Want::File).map(drop)
    }

    /// Reads the file `rel` as bytes, in a buffer wiped on drop (it may hold secrets).
    ///
    /// # Errors
    /// The [`Refusal`]; the file is not read when it is refused.
    pub fn read_bytes(&self, rel: &str) -> Result<Zeroizing<Vec<u8>>, Refusal> {
        let path = self.resolve(rel, Want::File)?;
        std::fs::read(path)
            .map(Zeroizing::new)
            .map_err(|e| Refusal::Io {
                path: rel.to_string(),
                kind: e.kind(),
            })
    }

    /// Reads the file `rel` as UTF-8 text.
    ///
    /// # Errors
    /// The [`Refusal`]; the file is not read when it is refused.
    pub fn read_to_string(&self, rel: &str) -> Result<String, Refusal> {
        let bytes = self.read_bytes(rel)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Refusal::NotText(rel.to_string()))
    }

    /// Names of the entries of the folder `rel` (not followed: each is resolved when read).
    ///
    /// # Errors
    /// The [`Refusal`] of the folder.
    pub fn list_dir(&self, rel: &str) -> Result<Vec<String>, Refusal> {
        let path = self.resolve(rel, Want::Dir)?;
        let entries = std::fs::read_dir(path).map_err(|e| Refusal::Io {
            path: rel.to_string(),
            kind: e.kind(),
        })?;
        let mut out: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_must_be_normalized() {
        assert!(check_relative("patches/a.yaml").is_ok());
        for (p, want) in [
            ("/etc/passwd", "absolute"),
            ("../x", "climbs"),
            ("patches/../../x", "climbs"),
            ("./x", "normalized"),
            ("a//b", "normalized"),
            ("a/", "normalized"),
            ("", "normalized"),
        ] {
            let e = check_relative(p).unwrap_err().to_string();
            assert!(e.contains(want), "{p}: {e}");
        }
    }
}
