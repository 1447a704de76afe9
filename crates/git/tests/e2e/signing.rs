//! Commit signature verification end to end: signed, unsigned and untrusted heads.

use vixen_git::{Error, GitSource, SignaturePolicy};

use crate::fixture::{Remote, keygen};
use crate::http::config;
use crate::http_server::GitHttpServer;

#[test]
fn signed_unsigned_and_untrusted_heads() {
    let remote = Remote::new();
    let keys = remote.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let alice = keygen(&keys, "alice");
    let mallory = keygen(&keys, "mallory");
    let alice_pub = std::fs::read_to_string(alice.with_extension("pub")).unwrap();
    let allowed = keys.join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("alice@example.com namespaces=\"git\" {alice_pub}"),
    )
    .unwrap();

    let a = remote.commit(&[("cluster.yaml", "v: 1\n")], "signed", Some(&alice));
    let server = GitHttpServer::start(remote.bare.parent().unwrap(), "u", "p");
    let mut cfg = config(
        server.url("repo.git"),
        remote.dir.path().join("cache"),
        "u",
        "p",
    );
    cfg.signatures = Some(SignaturePolicy {
        allowed_signers: allowed.clone(),
    });
    let mut src = GitSource::new(&cfg).unwrap();
    let co = src.fetch().unwrap();
    assert_eq!(co.commit, a);
    let sig = co.signature.clone().expect("verified signature");
    assert_eq!(sig.principal, "alice@example.com");
    assert!(sig.fingerprint.starts_with("SHA256:"));

    // Unsigned head: refused, named, previous checkout kept.
    let b = remote.commit(&[("cluster.yaml", "v: 2\n")], "unsigned", None);
    match src.fetch().unwrap_err() {
        Error::Unsigned { commit } => assert_eq!(commit, b),
        other => panic!("{other:?}"),
    }
    assert!(co.path.is_dir(), "previous checkout stays");
    assert!(!remote.dir.path().join("cache/checkouts").join(&b).exists());

    // Signed by a key not in the allowed signers file.
    let c = remote.commit(&[("cluster.yaml", "v: 3\n")], "mallory", Some(&mallory));
    match src.fetch().unwrap_err() {
        Error::UntrustedSignature { commit, reason } => {
            assert_eq!(commit, c);
            assert!(reason.contains("not in the allowed signers"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // Alice allowed only for another namespace.
    std::fs::write(
        &allowed,
        format!("alice@example.com namespaces=\"file\" {alice_pub}"),
    )
    .unwrap();
    remote.commit(&[("cluster.yaml", "v: 4\n")], "alice again", Some(&alice));
    assert!(matches!(
        src.fetch().unwrap_err(),
        Error::UntrustedSignature { .. }
    ));

    // Back to trusted: applied.
    std::fs::write(&allowed, format!("alice@example.com {alice_pub}")).unwrap();
    let d = remote.head();
    let co = src.fetch().unwrap();
    assert_eq!(co.commit, d);
    assert_eq!(
        std::fs::read_to_string(co.path.join("cluster.yaml")).unwrap(),
        "v: 4\n"
    );
}
