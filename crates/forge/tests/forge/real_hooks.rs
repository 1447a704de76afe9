//! Webhooks as Gitea 1.27, Forgejo and GitHub really send them, JSON and form, built from their
//! sources and docs:
//! - Gitea: go-gitea/gitea `services/webhook/deliver.go` (`newDefaultRequest`: the JSON body, or
//!   `url.Values{"payload": ...}.Encode()` with `application/x-www-form-urlencoded`;
//!   `addDefaultHeaders`: X-Gitea-*, X-Gogs-*, X-Hub-Signature(-256), X-GitHub-*, all signing
//!   the JSON payload), payloads from `modules/structs/hook.go` (`json.MarshalIndent(p, "", "  ")`).
//! - Forgejo: `services/webhook/shared/payloader.go` `AddDefaultHeaders` (X-Forgejo-* first, then
//!   Gitea's set) and `services/webhook/default.go` (same form encoding, JSON signed).
//! - GitHub: docs `webhooks/webhook-events-and-payloads` (delivery headers),
//!   `validating-webhook-deliveries` (HMAC of the body as received) and `creating-webhooks`
//!   (form: the JSON "as a form parameter called payload").

use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::json;
use sha1::Sha1;
use sha2::Sha256;
use vixen_forge::{Forge, Secret, WebhookError, handle_webhook, verify_push};

const SECRET: &str = "It's a Secret to Everybody";
const AFTER: &str = "bd0b8b3a51c1ef5a1a6a0e2a3c4f7d8e9f0a1b2c";
const BEFORE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
const UUID: &str = "0b2a6c1e-7f5d-4c3e-9a8b-1d2e3f4a5b6c";

fn hmac256(data: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(data);
    hex::encode(m.finalize().into_bytes())
}

fn hmac1(data: &[u8]) -> String {
    let mut m = Hmac::<Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(data);
    hex::encode(m.finalize().into_bytes())
}

/// Go's `url.QueryEscape`, as `url.Values.Encode` applies it: unreserved bytes stay, a space is
/// `+`, every other byte `%XX`.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A Gitea/Forgejo push payload, indented as `MarshalIndent(p, "", "  ")` writes it, with a
/// commit message carrying characters a form must escape.
fn gitea_push_json() -> String {
    let commit = json!({
        "id": AFTER,
        "message": "nodes: cp-2 gets 16 GiB & a new disk (50% more) + café\n",
        "url": format!("http://127.0.0.1:3000/acme/infra/commit/{AFTER}"),
        "author": {"name": "Ops", "email": "ops@example.invalid", "username": "ops"},
        "committer": {"name": "Ops", "email": "ops@example.invalid", "username": "ops"},
        "verification": null,
        "timestamp": "2026-03-01T10:00:00Z",
        "added": [],
        "removed": [],
        "modified": ["nodes/cp-2.yaml"]
    });
    let payload = json!({
        "ref": "refs/heads/main",
        "before": BEFORE,
        "after": AFTER,
        "compare_url": format!("http://127.0.0.1:3000/acme/infra/compare/{BEFORE}...{AFTER}"),
        "commits": [commit.clone()],
        "total_commits": 1,
        "head_commit": commit,
        "repository": {"id": 1, "name": "infra", "full_name": "acme/infra", "private": true},
        "pusher": {"id": 1, "login": "ops", "username": "ops"},
        "sender": {"id": 1, "login": "ops", "username": "ops"}
    });
    serde_json::to_string_pretty(&payload).unwrap()
}

fn github_push_json() -> String {
    json!({
        "ref": "refs/heads/main",
        "before": BEFORE,
        "after": AFTER,
        "repository": {"id": 1, "name": "infra", "full_name": "acme/infra"},
        "pusher": {"name": "ops", "email": "ops@example.invalid"},
        "head_commit": {"id": AFTER, "message": "cp-2: 16 GiB & 50% more + café"},
        "commits": []
    })
    .to_string()
}

fn map(pairs: &[(&str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

/// The headers Gitea's `addDefaultHeaders` sets (1.27: with the installation target type),
/// signing `signed` (the JSON payload).
fn gitea_headers(event: &str, signed: &[u8], form: bool) -> Vec<(&'static str, String)> {
    let (sig, sig1) = (hmac256(signed), hmac1(signed));
    let ct = if form {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    vec![
        ("Content-Type", ct.into()),
        ("User-Agent", "Go-http-client/1.1".into()),
        ("X-Gitea-Delivery", UUID.into()),
        ("X-Gitea-Event", event.into()),
        ("X-Gitea-Event-Type", event.into()),
        ("X-Gitea-Signature", sig.clone()),
        ("X-Gitea-Hook-Installation-Target-Type", "repository".into()),
        ("X-Gogs-Delivery", UUID.into()),
        ("X-Gogs-Event", event.into()),
        ("X-Gogs-Event-Type", event.into()),
        ("X-Gogs-Signature", sig.clone()),
        ("X-Hub-Signature", format!("sha1={sig1}")),
        ("X-Hub-Signature-256", format!("sha256={sig}")),
        ("X-GitHub-Delivery", UUID.into()),
        ("X-GitHub-Event", event.into()),
        ("X-GitHub-Event-Type", event.into()),
        (
            "X-GitHub-Hook-Installation-Target-Type",
            "repository".into(),
        ),
    ]
}

/// Forgejo's `AddDefaultHeaders`: its own X-Forgejo-* set, then Gitea's.
fn forgejo_headers(event: &str, signed: &[u8], form: bool) -> Vec<(&'static str, String)> {
    let sig = hmac256(signed);
    let mut h = vec![
        ("X-Forgejo-Delivery", UUID.to_owned()),
        ("X-Forgejo-Event", event.into()),
        ("X-Forgejo-Event-Type", event.into()),
        ("X-Forgejo-Signature", sig),
    ];
    h.extend(
        gitea_headers(event, signed, form)
            .into_iter()
            .filter(|(k, _)| !k.contains("Installation-Target")),
    );
    h
}

/// GitHub's delivery headers; the signatures cover `body`, the bytes sent.
fn github_headers(event: &str, body: &[u8], form: bool) -> Vec<(&'static str, String)> {
    let ct = if form {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    vec![
        ("Content-Type", ct.into()),
        ("User-Agent", "GitHub-Hookshot/8e03811".into()),
        ("X-GitHub-Delivery", UUID.into()),
        ("X-GitHub-Event", event.into()),
        ("X-GitHub-Hook-ID", "292430182".into()),
        ("X-GitHub-Hook-Installation-Target-ID", "79929171".into()),
        (
            "X-GitHub-Hook-Installation-Target-Type",
            "repository".into(),
        ),
        ("X-Hub-Signature", format!("sha1={}", hmac1(body))),
        ("X-Hub-Signature-256", format!("sha256={}", hmac256(body))),
    ]
}

fn form(json: &str) -> Vec<u8> {
    format!("payload={}", query_escape(json)).into_bytes()
}

/// Fault: Gitea's GitHub-compatible headers made every Gitea push look like GitHub's, and a
/// Gitea or Forgejo "form" hook (HMAC over the JSON inside `payload`) was always refused.
/// Both content types are accepted and reported as the forge that sent them.
#[test]
fn gitea_and_forgejo_json_and_form_hooks_are_theirs_and_verified() {
    let secret = Secret::new(SECRET);
    let json = gitea_push_json();
    type Headers = fn(&str, &[u8], bool) -> Vec<(&'static str, String)>;
    let senders: [(Forge, Headers); 2] = [
        (Forge::Gitea, gitea_headers),
        (Forge::Forgejo, forgejo_headers),
    ];
    for (forge, make) in senders {
        for is_form in [false, true] {
            let body = if is_form {
                form(&json)
            } else {
                json.clone().into_bytes()
            };
            let h = map(&make("push", json.as_bytes(), is_form));
            let out = handle_webhook(&h, &body, &secret);
            let ev = out
                .event
                .unwrap_or_else(|| panic!("{forge} form={is_form}: {}", out.body));
            assert_eq!(out.status, 202);
            assert_eq!(
                (
                    ev.forge,
                    ev.repo.as_str(),
                    ev.reference.as_str(),
                    ev.after.as_str()
                ),
                (forge, "acme/infra", "refs/heads/main", AFTER),
                "form={is_form}"
            );
            assert!(out.body.contains(AFTER), "{}", out.body);

            // A form hook whose signature covers the form body instead is not Gitea's.
            if is_form {
                let h = map(&make("push", &body, true));
                let err = verify_push(&h, &body, &secret).unwrap_err();
                assert!(
                    matches!(err, WebhookError::BadSignature { forge: f, .. } if f == forge),
                    "{forge}: {err:?}"
                );
            }
        }
    }
}

/// Fault: GitHub form hooks were refused, or verified over the wrong bytes. GitHub signs the
/// form body as sent, so a signature over the JSON inside is refused.
#[test]
fn github_json_and_form_hooks_are_verified_over_the_body_sent() {
    let secret = Secret::new(SECRET);
    let json = github_push_json();
    for is_form in [false, true] {
        let body = if is_form {
            form(&json)
        } else {
            json.clone().into_bytes()
        };
        let h = map(&github_headers("push", &body, is_form));
        let ev = verify_push(&h, &body, &secret).unwrap_or_else(|e| panic!("form={is_form}: {e}"));
        assert_eq!(
            (ev.forge, ev.repo.as_str(), ev.after.as_str()),
            (Forge::GitHub, "acme/infra", AFTER)
        );
    }
    let body = form(&json);
    let h = map(&github_headers("push", json.as_bytes(), true));
    assert!(matches!(
        verify_push(&h, &body, &secret).unwrap_err(),
        WebhookError::BadSignature {
            forge: Forge::GitHub,
            ..
        }
    ));
}

/// Fault: answers without a reason (the forge's delivery log showed a bare 401/400), or a reason
/// that echoes the secret. Each refusal says why, in plain text; a ping is answered.
#[test]
fn answers_say_why_and_never_hold_the_secret() {
    let secret = Secret::new(SECRET);
    let json = gitea_push_json();
    let body = json.as_bytes();
    let check = |h: &HeaderMap, body: &[u8], status: u16, says: &str| {
        let out = handle_webhook(h, body, &secret);
        assert_eq!(out.status, status, "{}", out.body);
        assert!(out.body.contains(says), "{:?} lacks {says:?}", out.body);
        assert!(out.body.ends_with('\n'));
        assert!(!out.body.contains(SECRET) && !out.body.contains(&hmac256(body)));
        assert!(out.event.is_none());
    };
    // Gitea, no secret set on the hook: `addDefaultHeaders` sends the signature headers empty.
    let mut h = map(&gitea_headers("push", body, false));
    for (k, v) in [
        ("x-gitea-signature", ""),
        ("x-gogs-signature", ""),
        ("x-hub-signature", "sha1="),
        ("x-hub-signature-256", "sha256="),
    ] {
        h.insert(k, v.parse().unwrap());
    }
    check(&h, body, 401, "without a X-Gitea-Signature header");
    // Signed with another secret.
    let mut h = map(&gitea_headers("push", body, false));
    h.insert("x-gitea-signature", hmac1(body).parse().unwrap());
    check(&h, body, 401, "X-Gitea-Signature does not match");
    // Forgejo is checked on its own header.
    let mut h = map(&forgejo_headers("push", body, false));
    h.insert("x-forgejo-signature", "00".repeat(32).parse().unwrap());
    check(&h, body, 401, "forgejo webhook whose X-Forgejo-Signature");
    // Not a forge at all.
    check(&HeaderMap::new(), body, 400, "no X-Forgejo-Event");
    // Verified, but not a push payload.
    let junk = b"{\"ref\": 1}";
    check(
        &map(&gitea_headers("push", junk, false)),
        junk,
        400,
        "malformed",
    );
    // A form hook without its payload field (Gitea signs the JSON: nothing to verify).
    let h = map(&gitea_headers("push", body, true));
    check(&h, b"other=1", 400, "no payload field");
    // Verified events vixen does not act on.
    let h = map(&gitea_headers("issues", body, false));
    check(&h, body, 202, "\"issues\" event ignored");
    let zen = br#"{"zen":"Keep it logically awesome.","hook_id":292430182}"#;
    check(&map(&github_headers("ping", zen, false)), zen, 200, "pong");
}
