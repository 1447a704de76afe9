//! Git over SSH against a throwaway sshd: clone, poll, new commit, force-push, host key checks,
//! wrong key.

use vixen_git::{Auth, Error, GitRef, GitSource, GitSourceConfig};

use crate::fixture::{Remote, keygen};
use crate::sshd::Sshd;

fn config(sshd: &Sshd, remote: &Remote, cache: &str) -> GitSourceConfig {
    GitSourceConfig {
        url: sshd.url(&remote.bare),
        reference: GitRef::Branch("main".into()),
        sub_path: None,
        auth: Auth::SshKey {
            private_key: sshd.user_key.clone(),
            passphrase: None,
            known_hosts: sshd.known_hosts.clone(),
        },
        cache_dir: remote.dir.path().join(cache),
        signatures: None,
    }
}

#[test]
fn ssh_clone_poll_new_commit_and_force_push() {
    let remote = Remote::new();
    let sshd = Sshd::start(&remote.dir.path().join("ssh"));
    let a = remote.commit(&[("cluster.yaml", "v: 1\n")], "a", None);
    let mut src = GitSource::new(&config(&sshd, &remote, "cache")).unwrap();
    assert_eq!(src.poll().unwrap().commit, a);
    let co = src.fetch().unwrap();
    assert_eq!(
        std::fs::read_to_string(co.path.join("cluster.yaml")).unwrap(),
        "v: 1\n"
    );
    assert_eq!(src.poll().unwrap().commit, a);
    assert_eq!(
        src.fetch().unwrap().received_objects,
        0,
        "no change: nothing downloaded"
    );

    let b = remote.commit(&[("cluster.yaml", "v: 2\n")], "b", None);
    assert_eq!(src.poll().unwrap().commit, b);
    assert_eq!(src.fetch().unwrap().commit, b);
    let c = remote.amend_and_force_push(&[("cluster.yaml", "v: 3\n")]);
    assert_eq!(src.poll().unwrap().commit, c);
    let co = src.fetch().unwrap();
    assert_eq!(
        std::fs::read_to_string(co.path.join("cluster.yaml")).unwrap(),
        "v: 3\n"
    );
}

#[test]
fn ssh_unknown_or_changed_host_key_is_refused() {
    let remote = Remote::new();
    let sshd = Sshd::start(&remote.dir.path().join("ssh"));
    remote.commit(&[("a", "1")], "a", None);
    let cfg = config(&sshd, &remote, "cache");
    let Auth::SshKey { known_hosts, .. } = &cfg.auth else {
        unreachable!()
    };

    // Host missing from known_hosts (the key is only recorded for another port).
    std::fs::write(known_hosts, format!("[127.0.0.1]:1 {}\n", sshd.host_pub)).unwrap();
    let err = GitSource::new(&cfg).unwrap().poll().unwrap_err();
    assert!(matches!(err, Error::HostKeyUnknown { .. }), "{err:?}");

    // Empty known_hosts.
    std::fs::write(known_hosts, "").unwrap();
    let mut src = GitSource::new(&cfg).unwrap();
    assert!(matches!(
        src.fetch().unwrap_err(),
        Error::HostKeyUnknown { .. }
    ));

    // Another key of the same type recorded for this host: changed.
    let other = keygen(remote.dir.path(), "other");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(
        known_hosts,
        format!("[127.0.0.1]:{} {other_pub}", sshd.port),
    )
    .unwrap();
    let err = GitSource::new(&cfg).unwrap().poll().unwrap_err();
    assert!(matches!(err, Error::HostKeyChanged { .. }), "{err:?}");
    assert!(err.to_string().contains("SHA256:"), "{err}");

    // Missing known_hosts file.
    std::fs::remove_file(known_hosts).unwrap();
    let err = GitSource::new(&cfg).unwrap().poll().unwrap_err();
    assert!(matches!(err, Error::KnownHosts { .. }), "{err:?}");
}

#[test]
fn ssh_wrong_key_is_an_auth_error() {
    let remote = Remote::new();
    let sshd = Sshd::start(&remote.dir.path().join("ssh"));
    remote.commit(&[("a", "1")], "a", None);
    let mut cfg = config(&sshd, &remote, "cache");
    let stranger = keygen(remote.dir.path(), "stranger");
    if let Auth::SshKey { private_key, .. } = &mut cfg.auth {
        *private_key = stranger;
    }
    let err = GitSource::new(&cfg).unwrap().poll().unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
}
