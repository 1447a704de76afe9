//! Webhook verification for each forge, directly and through the HTTP receiver.

use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use vixen_forge::{Forge, PushEvent, Secret, WebhookError, serve_webhooks, verify_push};

const SECRET: &str = "webhook-secret";
const AFTER: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn github_body() -> Vec<u8> {
    format!(r#"{{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":"{AFTER}","repository":{{"full_name":"acme/infra"}},"commits":[]}}"#).into_bytes()
}

fn gitlab_body() -> Vec<u8> {
    format!(r#"{{"object_kind":"push","ref":"refs/heads/main","after":"{AFTER}","project":{{"path_with_namespace":"group/infra"}}}}"#).into_bytes()
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

/// (forge, valid headers, forged headers, body) for each forge.
fn cases() -> Vec<(Forge, HeaderMap, HeaderMap, Vec<u8>)> {
    let gh = github_body();
    let gl = gitlab_body();
    let mut out = vec![(
        Forge::GitHub,
        headers(&[
            ("x-github-event", "push".into()),
            (
                "x-hub-signature-256",
                format!("sha256={}", sign(&gh, SECRET)),
            ),
        ]),
        headers(&[
            ("x-github-event", "push".into()),
            (
                "x-hub-signature-256",
                format!("sha256={}", sign(&gh, "guess")),
            ),
        ]),
        gh.clone(),
    )];
    for (forge, event, sig) in [
        (Forge::Gitea, "x-gitea-event", "x-gitea-signature"),
        (Forge::Forgejo, "x-forgejo-event", "x-forgejo-signature"),
    ] {
        out.push((
            forge,
            headers(&[(event, "push".into()), (sig, sign(&gh, SECRET))]),
            headers(&[(event, "push".into()), (sig, sign(b"other body", SECRET))]),
            gh.clone(),
        ));
    }
    out.push((
        Forge::GitLab,
        headers(&[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", SECRET.into()),
        ]),
        headers(&[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", "webhook-secreT".into()),
        ]),
        gl,
    ));
    out
}

#[test]
fn valid_and_forged_signatures_per_forge() {
    let secret = Secret::new(SECRET);
    for (forge, valid, forged, body) in cases() {
        let ev = verify_push(&valid, &body, &secret).unwrap_or_else(|e| panic!("{forge}: {e}"));
        assert_eq!(ev.forge, forge);
        assert_eq!(ev.reference, "refs/heads/main");
        assert_eq!(ev.after, AFTER);
        assert_eq!(
            ev.repo,
            if forge == Forge::GitLab {
                "group/infra"
            } else {
                "acme/infra"
            }
        );

        let err = verify_push(&forged, &body, &secret).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature { forge: f, .. } if f == forge),
            "{forge}: {err:?}"
        );
        assert_eq!(err.status_code(), 401);

        // Body changed after signing.
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        if forge != Forge::GitLab {
            assert_eq!(
                verify_push(&valid, &tampered, &secret)
                    .unwrap_err()
                    .status_code(),
                401
            );
        }

        // Signature header removed.
        let mut stripped = valid.clone();
        for h in [
            "x-hub-signature-256",
            "x-gitea-signature",
            "x-forgejo-signature",
            "x-gitlab-token",
        ] {
            stripped.remove(h);
        }
        assert!(matches!(
            verify_push(&stripped, &body, &secret).unwrap_err(),
            WebhookError::MissingSignature { .. }
        ));
    }
    let err = verify_push(&HeaderMap::new(), b"{}", &secret).unwrap_err();
    assert!(matches!(err, WebhookError::UnknownForge));
    assert_eq!(err.status_code(), 400);
}

#[test]
fn verified_non_push_events_are_ignored() {
    let secret = Secret::new(SECRET);
    let body = br#"{"zen":"hi"}"#;
    let h = headers(&[
        ("x-github-event", "issues".into()),
        (
            "x-hub-signature-256",
            format!("sha256={}", sign(body, SECRET)),
        ),
    ]);
    let err = verify_push(&h, body, &secret).unwrap_err();
    assert!(matches!(err, WebhookError::NotPush { .. }));
    assert_eq!(err.status_code(), 202);
    // Verified but not a push payload.
    let h = headers(&[
        ("x-gitea-event", "push".into()),
        ("x-gitea-signature", sign(body, SECRET)),
    ]);
    assert_eq!(
        verify_push(&h, body, &secret).unwrap_err().status_code(),
        400
    );
}

#[tokio::test]
async fn receiver_answers_401_and_triggers_nothing_when_unverified() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<PushEvent>>> = Arc::default();
    let seen2 = seen.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_webhooks(
        listener,
        Secret::new(SECRET),
        move |ev| seen2.lock().unwrap().push(ev),
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/hooks/vixen");
    for (forge, valid, forged, body) in cases() {
        let r = http
            .post(&url)
            .headers(forged)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{forge}");
        let why = r.text().await.unwrap();
        assert!(why.contains("does not match"), "{forge}: {why}");
        assert!(!why.contains(SECRET), "{forge}: {why}");
        assert!(
            seen.lock().unwrap().is_empty(),
            "{forge}: forged request triggered"
        );
        let r = http
            .post(&url)
            .headers(valid)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{forge}");
        assert_eq!(seen.lock().unwrap().pop().unwrap().forge, forge);
    }
    assert_eq!(http.get(&url).send().await.unwrap().status(), 405);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
