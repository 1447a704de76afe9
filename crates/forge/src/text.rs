//! Texts the forges show or send back: commit status descriptions fit to each forge's limit, and
//! the forge's own message from an error answer, cut and without the token.

use serde_json::Value;

use crate::Forge;

/// The longest description each forge takes, in characters.
///
/// - GitHub: 140; longer is refused with 422 "description is too long (maximum is 140
///   characters)" (shared/facts/commit-status.md).
/// - GitLab: 255 (doc/api/commits.md, "Set the pipeline status of a commit": "Must be 255
///   characters or fewer").
/// - Gitea, Forgejo: no limit; the column is TEXT and surrounding whitespace is trimmed
///   (models/git/commit_status.go `NewCommitStatus`). 1000 keeps a file:line reason whole while
///   bounding what vixen stores on the forge.
pub fn description_limit(forge: Forge) -> usize {
    match forge {
        Forge::GitHub => 140,
        Forge::GitLab => 255,
        Forge::Gitea | Forge::Forgejo => 1000,
    }
}

/// `description` as `forge` will show it: whitespace runs (newlines too) become one space, the
/// ends are trimmed, and a text over [`description_limit`] is cut on a character boundary and
/// ends with `…` (counted in the limit).
pub fn fit_description(forge: Forge, description: &str) -> String {
    let flat = description.split_whitespace().collect::<Vec<_>>().join(" ");
    let max = description_limit(forge);
    if flat.chars().count() <= max {
        return flat;
    }
    let mut out: String = flat.chars().take(max - 1).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// The forge's own message from an error answer: its `message` field (GitHub, Gitea, GitLab; an
/// object or list, as GitLab's validation errors, is shown as JSON), else `error`, else the
/// text itself; at most 200 characters, and never `token`.
pub(crate) fn forge_message(body: &str, token: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let picked = parsed.as_ref().and_then(|v| {
        ["message", "error"].iter().find_map(|k| match v.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })
    });
    let mut text = picked.unwrap_or_else(|| body.trim().to_owned());
    if !token.is_empty() {
        text = text.replace(token, "<redacted>");
    }
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return "(no message)".to_owned();
    }
    if flat.chars().count() <= 200 {
        return flat;
    }
    let mut out: String = flat.chars().take(199).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A description over the forge's limit is cut on a character boundary (a multi-byte
    /// character is never split) and ends with an ellipsis; short ones keep their text.
    #[test]
    fn descriptions_fit_each_forge() {
        let long = "é".repeat(300);
        for (forge, max) in [
            (Forge::GitHub, 140),
            (Forge::GitLab, 255),
            (Forge::Gitea, 1000),
        ] {
            let t = fit_description(forge, &long);
            assert_eq!(t.chars().count(), max.min(300), "{forge}");
            if max < 300 {
                assert!(t.ends_with('…'), "{forge}");
                assert!(t[..t.len() - '…'.len_utf8()].chars().all(|c| c == 'é'));
            }
        }
        assert_eq!(fit_description(Forge::GitHub, "short"), "short");
        assert_eq!(
            fit_description(Forge::GitHub, "  a\n  b\tc  "),
            "a b c",
            "whitespace as Gitea trims it and as one line shows it"
        );
        let exact = "x".repeat(140);
        assert_eq!(fit_description(Forge::GitHub, &exact), exact);
    }

    #[test]
    fn forge_messages_are_short_and_never_hold_the_token() {
        assert_eq!(
            forge_message(r#"{"message":"Validation Failed","errors":[]}"#, "t0k"),
            "Validation Failed"
        );
        assert_eq!(
            forge_message(r#"{"message":{"description":["is too long"]}}"#, "t0k"),
            r#"{"description":["is too long"]}"#
        );
        assert_eq!(
            forge_message("<html>bad gateway</html>", "t0k"),
            "<html>bad gateway</html>"
        );
        assert_eq!(
            forge_message(r#"{"message":"token t0k is bad"}"#, "t0k"),
            "token <redacted> is bad"
        );
        let long = format!(r#"{{"message":"{}"}}"#, "m".repeat(500));
        assert_eq!(forge_message(&long, "t0k").chars().count(), 200);
        assert_eq!(forge_message("", "t0k"), "(no message)");
    }
}
