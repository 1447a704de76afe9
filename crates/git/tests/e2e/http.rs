//! Git over HTTP: clone, cheap poll, new commit, force-push, credentials, refs, sub-paths.

use std::path::PathBuf;

use vixen_git::{Auth, Error, GitRef, GitSource, GitSourceConfig, Secret};

use crate::fixture::Remote;
use crate::http_server::GitHttpServer;

pub fn config(url: String, cache: PathBuf, user: &str, pass: &str) -> GitSourceConfig {
    GitSourceConfig {
        url,
        reference: GitRef::Branch("main".into()),
        sub_path: None,
        auth: Auth::Basic {
            username: user.into(),
            password: Secret::new(pass),
        },
        cache_dir: cache,
        signatures: None,
    }
}

fn read(path: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(path.join(file)).unwrap()
}

#[test]
fn http_clone_poll_new_commit_and_force_push() {
    let remote = Remote::new();
    let a = remote.commit(
        &[("cluster.yaml", "v: 1\n"), ("nodes/cp1.yaml", "n: 1\n")],
        "a",
        None,
    );
    let server = GitHttpServer::start(remote.bare.parent().unwrap(), "vixen", "pw");
    let cache = remote.dir.path().join("cache");
    let mut src = GitSource::new(&config(server.url("repo.git"), cache, "vixen", "pw")).unwrap();

    let rev = src.poll().unwrap();
    assert_eq!(rev.commit, a);
    assert_eq!(rev.reference, "refs/heads/main");
    let co = src.fetch().unwrap();
    assert_eq!(co.commit, a);
    assert!(co.received_objects > 0);
    assert_eq!(read(&co.path, "cluster.yaml"), "v: 1\n");
    assert_eq!(read(&co.path, "nodes/cp1.yaml"), "n: 1\n");
    assert!(!co.path.join(".git").exists());

    // Poll with no change: advertisement only, no upload-pack POST, no pack.
    server.take_log();
    assert_eq!(src.poll().unwrap().commit, a);
    let log = server.take_log();
    assert!(log.iter().all(|r| r.method == "GET"), "{log:?}");
    assert!(
        log.iter()
            .any(|r| r.target.contains("info/refs?service=git-upload-pack")),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|r| r.target == "/repo.git/git-upload-pack"),
        "{log:?}"
    );
    // Fetch with no change receives nothing.
    let again = src.fetch().unwrap();
    assert_eq!(
        (again.commit.as_str(), again.received_objects),
        (a.as_str(), 0)
    );
    assert!(!server.take_log().iter().any(|r| r.method == "POST"));

    // New commit.
    let b = remote.commit(&[("cluster.yaml", "v: 2\n")], "b", None);
    assert_eq!(src.poll().unwrap().commit, b);
    let co_b = src.fetch().unwrap();
    assert_eq!(co_b.commit, b);
    assert_eq!(read(&co_b.path, "cluster.yaml"), "v: 2\n");
    assert!(!co.path.exists(), "the old checkout is removed");

    // Force-push replacing b.
    let c = remote.amend_and_force_push(&[("cluster.yaml", "v: 3\n")]);
    assert_ne!(c, b);
    assert_eq!(src.poll().unwrap().commit, c);
    let co_c = src.fetch().unwrap();
    assert_eq!(
        (
            co_c.commit.as_str(),
            read(&co_c.path, "cluster.yaml").as_str()
        ),
        (c.as_str(), "v: 3\n")
    );

    // A new source on the same cache dir (agent restart) works too.
    drop(src);
    let mut src = GitSource::new(&config(
        server.url("repo.git"),
        remote.dir.path().join("cache"),
        "vixen",
        "pw",
    ))
    .unwrap();
    assert_eq!(src.fetch().unwrap().commit, c);
}

/// Fault: an idle poll made two HTTP requests (anonymous, 401, then with credentials), because
/// libgit2 only sends credentials when challenged. Basic and token credentials now go with the
/// first request: one request per poll, answered 200, and no 401 while fetching either.
#[test]
fn http_poll_sends_credentials_on_the_first_request() {
    let remote = Remote::new();
    let a = remote.commit(&[("a", "1")], "a", None);
    let root = remote.bare.parent().unwrap();
    for (user, auth) in [
        (
            "vixen",
            Auth::Basic {
                username: "vixen".into(),
                password: Secret::new("pw"),
            },
        ),
        ("x-access-token", Auth::Token(Secret::new("pw"))),
    ] {
        let server = GitHttpServer::start(root, user, "pw");
        let mut cfg = config(server.url("repo.git"), remote.dir.path().join(user), "", "");
        cfg.auth = auth;
        let mut src = GitSource::new(&cfg).unwrap();
        for _ in 0..2 {
            assert_eq!(src.poll().unwrap().commit, a);
            let log = server.take_log();
            assert_eq!(log.len(), 1, "{user}: one request per poll: {log:?}");
            assert_eq!(
                (log[0].method.as_str(), log[0].status),
                ("GET", 200),
                "{log:?}"
            );
            assert!(
                log[0]
                    .target
                    .ends_with("/info/refs?service=git-upload-pack")
            );
        }
        assert_eq!(src.fetch().unwrap().commit, a);
        let log = server.take_log();
        assert!(log.iter().all(|r| r.status == 200), "{user}: {log:?}");
        assert!(log.iter().any(|r| r.method == "POST"), "{log:?}");
    }
}

#[test]
fn http_wrong_or_missing_credentials() {
    let remote = Remote::new();
    remote.commit(&[("a", "1")], "a", None);
    let server = GitHttpServer::start(remote.bare.parent().unwrap(), "vixen", "pw");
    let cache = remote.dir.path().join("cache");
    let mut src = GitSource::new(&config(
        server.url("repo.git"),
        cache.clone(),
        "vixen",
        "hunter2",
    ))
    .unwrap();
    let err = src.poll().unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    // Refused credentials are not sent a second time.
    let log = server.take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status, 401);
    assert!(matches!(src.fetch().unwrap_err(), Error::AuthFailed { .. }));

    let mut cfg = config(server.url("repo.git"), cache.clone(), "", "");
    cfg.auth = Auth::None;
    let err = GitSource::new(&cfg).unwrap().poll().unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");

    // A password in the URL is used as basic auth and never shown.
    let mut cfg = config(
        format!("http://vixen:hunter2@127.0.0.1:{}/repo.git", server.port),
        cache.clone(),
        "",
        "",
    );
    cfg.auth = Auth::None;
    let err = GitSource::new(&cfg).unwrap().poll().unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, Error::AuthFailed { .. }));
    assert!(!shown.contains("hunter2"), "{shown}");
    cfg.url = format!("http://vixen:pw@127.0.0.1:{}/repo.git", server.port);
    assert!(GitSource::new(&cfg).unwrap().poll().is_ok());
}

#[test]
fn http_tag_pinned_commit_sub_path_and_missing_ref() {
    let remote = Remote::new();
    let a = remote.commit(
        &[("clusters/prod/cluster.yaml", "prod\n"), ("README", "x")],
        "a",
        None,
    );
    remote.tag("v1");
    let b = remote.commit(&[("clusters/prod/cluster.yaml", "prod2\n")], "b", None);
    let server = GitHttpServer::start(remote.bare.parent().unwrap(), "vixen", "pw");
    let base = config(
        server.url("repo.git"),
        remote.dir.path().join("c1"),
        "vixen",
        "pw",
    );

    let mut cfg = base.clone();
    cfg.reference = GitRef::Tag("v1".into());
    let mut src = GitSource::new(&cfg).unwrap();
    assert_eq!(src.poll().unwrap().commit, a, "annotated tag is peeled");
    assert_eq!(src.fetch().unwrap().commit, a);

    let mut cfg = base.clone();
    cfg.cache_dir = remote.dir.path().join("c2");
    cfg.reference = GitRef::Commit(a.clone());
    let mut src = GitSource::new(&cfg).unwrap();
    assert_eq!(src.poll().unwrap().commit, a);
    let co = src.fetch().unwrap();
    assert_eq!(
        (co.commit.as_str(), read(&co.path, "README").as_str()),
        (a.as_str(), "x")
    );

    let mut cfg = base.clone();
    cfg.cache_dir = remote.dir.path().join("c3");
    cfg.sub_path = Some("clusters/prod".into());
    let mut src = GitSource::new(&cfg).unwrap();
    let co = src.fetch().unwrap();
    assert_eq!(co.commit, b);
    assert_eq!(read(&co.path, "cluster.yaml"), "prod2\n");
    assert!(!co.path.join("README").exists());

    cfg.sub_path = Some("clusters/staging".into());
    let err = GitSource::new(&cfg).unwrap().fetch().unwrap_err();
    assert!(matches!(err, Error::SubPathNotFound { .. }), "{err:?}");

    let mut cfg = base.clone();
    cfg.reference = GitRef::Branch("nope".into());
    let src = GitSource::new(&cfg).unwrap();
    assert!(matches!(src.poll().unwrap_err(), Error::RefNotFound { .. }));
    let mut src = src;
    assert!(matches!(
        src.fetch().unwrap_err(),
        Error::RefNotFound { .. }
    ));
}
