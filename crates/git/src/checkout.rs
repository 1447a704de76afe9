//! Writes a tree of the cache repository to a fresh directory, refusing entries that could write
//! or point outside it.
//!
//! Files get mode 0644 (0755 when executable in Git); symlinks are recreated only when their
//! target stays inside the checkout; submodules are skipped (vixen does not fetch them).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use git2::{ObjectType, Repository, Tree};

use crate::{Error, Result};

const MODE_EXEC: i32 = 0o100_755;
const MODE_LINK: i32 = 0o120_000;

/// Writes `tree` into `dir` (which must exist and be empty).
///
/// # Errors
/// [`Error::UnsafeEntry`] for a name or symlink that escapes, [`Error::Io`], [`Error::Git`].
pub(crate) fn write_tree(
    repo: &Repository,
    tree: &Tree<'_>,
    dir: &Path,
    commit: &str,
) -> Result<()> {
    write_dir(repo, tree, dir, Path::new(""), commit)
}

fn write_dir(
    repo: &Repository,
    tree: &Tree<'_>,
    root: &Path,
    rel: &Path,
    commit: &str,
) -> Result<()> {
    for entry in tree.iter() {
        let name = std::ffi::OsStr::from_bytes(entry.name_bytes());
        let rel_path = rel.join(name);
        let unsafe_entry = |reason| Error::UnsafeEntry {
            commit: commit.to_owned(),
            path: rel_path.display().to_string(),
            reason,
        };
        let name_ok = !name.is_empty()
            && name != "."
            && name != ".."
            && !entry.name_bytes().contains(&b'/')
            && name != ".git";
        if !name_ok {
            return Err(unsafe_entry("file name not allowed"));
        }
        let path = root.join(&rel_path);
        let git = |source| Error::Git {
            op: "read tree",
            url: String::new(),
            source,
        };
        match entry.kind() {
            Some(ObjectType::Tree) => {
                fs::create_dir(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                let sub = repo.find_tree(entry.id()).map_err(git)?;
                write_dir(repo, &sub, root, &rel_path, commit)?;
            }
            Some(ObjectType::Blob) => {
                let blob = repo.find_blob(entry.id()).map_err(git)?;
                if entry.filemode() == MODE_LINK {
                    let target = Path::new(std::ffi::OsStr::from_bytes(blob.content()));
                    if !link_stays_inside(rel, target) {
                        return Err(unsafe_entry("symlink points outside the checkout"));
                    }
                    std::os::unix::fs::symlink(target, &path).map_err(|source| Error::Io {
                        path: path.clone(),
                        source,
                    })?;
                } else {
                    fs::write(&path, blob.content()).map_err(|source| Error::Io {
                        path: path.clone(),
                        source,
                    })?;
                    let mode = if entry.filemode() == MODE_EXEC {
                        0o755
                    } else {
                        0o644
                    };
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(
                        |source| Error::Io {
                            path: path.clone(),
                            source,
                        },
                    )?;
                }
            }
            _ => {
                tracing::warn!(path = %rel_path.display(), "skipping submodule entry");
            }
        }
    }
    Ok(())
}

/// Whether a link in directory `dir` (relative to the root) to `target` resolves inside the root.
fn link_stays_inside(dir: &Path, target: &Path) -> bool {
    let mut depth: Vec<PathBuf> = dir
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    for c in target.components() {
        match c {
            Component::Normal(s) => depth.push(PathBuf::from(s)),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets() {
        assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(link_stays_inside(Path::new(""), Path::new("x/y")));
        assert!(!link_stays_inside(
            Path::new("a"),
            Path::new("../../etc/passwd")
        ));
        assert!(!link_stays_inside(Path::new(""), Path::new("/etc/passwd")));
    }
}
