//! Which forge a Git URL lives on, and the API base and repository to post statuses to: what
//! `vixen bootstrap --install-repo` writes into `vixen-config` so that a forge token is all the
//! agent still needs. Only hosts whose forge is certain are named: github.com, gitlab.com,
//! codeberg.org (Forgejo), and hosts whose name says Gitea or Forgejo (`gitea.example.org`,
//! `git.forgejo.dev`). Any other host gives `None`: the user passes `--forge` and friends.
//!
//! Accepted forms: `https://HOST[:PORT]/OWNER/REPO[.git]`, `http://...`,
//! `ssh://[USER@]HOST[:PORT]/OWNER/REPO[.git]` and scp-like `[USER@]HOST:OWNER/REPO[.git]`.

use crate::Forge;

/// A forge and repository derived from a Git URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgeGuess {
    /// The forge.
    pub forge: Forge,
    /// Its API base (as `--forge-url` takes it).
    pub base_url: String,
    /// `OWNER/REPO` (GitLab: the project path, groups included).
    pub repo: String,
}

/// Host, whether the web side is plain HTTP, and the path, of a Git URL.
fn split(url: &str) -> Option<(String, bool, String)> {
    let url = url.trim();
    let (host_part, path, http) = if let Some(rest) = url.strip_prefix("https://") {
        let (h, p) = rest.split_once('/')?;
        (h, p, false)
    } else if let Some(rest) = url.strip_prefix("http://") {
        let (h, p) = rest.split_once('/')?;
        (h, p, true)
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        let (h, p) = rest.split_once('/')?;
        (h, p, false)
    } else if !url.contains("://") {
        // scp-like: [user@]host:path
        let (h, p) = url.split_once(':')?;
        (h, p, false)
    } else {
        return None;
    };
    // No credentials or user in the host; the SSH port says nothing about the web port.
    let host = host_part.rsplit('@').next()?;
    let host = if url.starts_with("ssh://") || !url.contains("://") {
        host.split(':').next()?
    } else {
        host
    };
    let host = host.to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some((host, http, path.to_owned()))
}

/// The forge and repository of `url`, when the host says which forge it is.
pub fn guess_forge(url: &str) -> Option<ForgeGuess> {
    let (host, http, path) = split(url)?;
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2
        || segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return None;
    }
    let hostname = host.split(':').next().unwrap_or_default();
    let web = format!("{}://{host}", if http { "http" } else { "https" });
    let two = || segments.len() == 2;
    let repo = segments.join("/");
    let (forge, base_url) = match hostname {
        "github.com" | "www.github.com" if two() => {
            (Forge::GitHub, "https://api.github.com".into())
        }
        "gitlab.com" => (Forge::GitLab, "https://gitlab.com/api/v4".into()),
        "codeberg.org" if two() => (Forge::Forgejo, "https://codeberg.org".into()),
        h if two() && h.split('.').any(|l| l.contains("forgejo")) => (Forge::Forgejo, web),
        h if two() && h.split('.').any(|l| l.contains("gitea")) => (Forge::Gitea, web),
        _ => return None,
    };
    Some(ForgeGuess {
        forge,
        base_url,
        repo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(forge: Forge, base: &str, repo: &str) -> Option<ForgeGuess> {
        Some(ForgeGuess {
            forge,
            base_url: base.into(),
            repo: repo.into(),
        })
    }

    #[test]
    fn forms_and_hosts() {
        let gh = g(Forge::GitHub, "https://api.github.com", "acme/homelab");
        let table: &[(&str, Option<ForgeGuess>)] = &[
            ("https://github.com/acme/homelab.git", gh.clone()),
            ("https://github.com/acme/homelab", gh.clone()),
            ("https://github.com/acme/homelab/", gh.clone()),
            ("git@github.com:acme/homelab.git", gh.clone()),
            ("ssh://git@github.com/acme/homelab.git", gh.clone()),
            ("ssh://git@github.com:22/acme/homelab", gh.clone()),
            ("https://x-access-token@github.com/acme/homelab.git", gh),
            // A GitHub path is OWNER/REPO only.
            ("https://github.com/acme/homelab/tree/main", None),
            (
                "https://gitlab.com/acme/infra/homelab.git",
                g(
                    Forge::GitLab,
                    "https://gitlab.com/api/v4",
                    "acme/infra/homelab",
                ),
            ),
            (
                "https://gitea.example.org/ops/homelab.git",
                g(Forge::Gitea, "https://gitea.example.org", "ops/homelab"),
            ),
            (
                "http://gitea.lan:3000/ops/homelab.git",
                g(Forge::Gitea, "http://gitea.lan:3000", "ops/homelab"),
            ),
            (
                "git@gitea.example.org:ops/homelab.git",
                g(Forge::Gitea, "https://gitea.example.org", "ops/homelab"),
            ),
            (
                "ssh://git@gitea.example.org:2222/ops/homelab.git",
                g(Forge::Gitea, "https://gitea.example.org", "ops/homelab"),
            ),
            (
                "https://codeberg.org/ops/homelab.git",
                g(Forge::Forgejo, "https://codeberg.org", "ops/homelab"),
            ),
            (
                "https://git.forgejo.example/ops/homelab",
                g(Forge::Forgejo, "https://git.forgejo.example", "ops/homelab"),
            ),
            // Hosts that do not say which forge they are.
            ("https://git.example.com/ops/homelab.git", None),
            ("http://127.0.0.1:8080/repo.git", None),
            ("https://github.com/acme", None),
            ("https://github.com/../homelab", None),
            ("file:///srv/git/homelab.git", None),
            ("", None),
        ];
        for (url, want) in table {
            assert_eq!(&guess_forge(url), want, "{url}");
        }
    }
}
