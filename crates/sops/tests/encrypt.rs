//! vixen's SOPS encryption against the real `sops`: a tree vixen encrypts decrypts with `sops
//! decrypt` (and with vixen) to the same plaintext, and a tampered value fails sops' MAC check.
//! Fault covered: a file `vixen import` writes that sops (or Flux's SOPS decryption) cannot
//! open, or opens without checking its MAC.

mod common;

use common::{Lab, sops_or_skip};
use vixen_sops::{Format, Node, encrypt_yaml};
use zeroize::Zeroizing;

fn leaf(s: &str) -> Node {
    Node::Str(Zeroizing::new(s.to_string()))
}

fn tree() -> Vec<(String, Node)> {
    vec![
        (
            "cluster".into(),
            Node::Map(vec![
                ("id".into(), leaf("abc=")),
                ("secret".into(), leaf("s3cr3t: with colon")),
            ]),
        ),
        (
            "certs".into(),
            Node::Map(vec![(
                "os".into(),
                Node::Map(vec![("crt".into(), leaf("LS0t")), ("key".into(), leaf(""))]),
            )]),
        ),
    ]
}

const PLAIN: &str = "cluster:\n    id: abc=\n    secret: 's3cr3t: with colon'\ncerts:\n    os:\n        crt: LS0t\n        key: \"\"\n";

#[test]
fn sops_decrypts_what_vixen_encrypts_and_checks_its_mac() {
    if !sops_or_skip("sops_decrypts_what_vixen_encrypts_and_checks_its_mac") {
        return;
    }
    let lab = Lab::new();
    let enc = encrypt_yaml(
        &tree(),
        std::slice::from_ref(&lab.recipient),
        "2026-12-03T14:00:00Z",
    )
    .unwrap();
    assert!(!enc.contains("s3cr3t"), "{enc}");
    let by_sops = lab.sops_decrypt("bundle.sops.yaml", enc.as_bytes(), Format::Yaml);
    assert_eq!(String::from_utf8(by_sops).unwrap(), PLAIN);
    let by_vixen = vixen_sops::decrypt(enc.as_bytes(), Format::Yaml, &lab.keyring()).unwrap();
    assert_eq!(std::str::from_utf8(by_vixen.as_bytes()).unwrap(), PLAIN);

    // Swap two encrypted values: each still authenticates under its own path only, so sops
    // refuses; a value moved under another key must never decrypt.
    let lines: Vec<&str> = enc.lines().collect();
    let id = lines
        .iter()
        .position(|l| l.starts_with("    id: "))
        .unwrap();
    let crt = lines
        .iter()
        .position(|l| l.starts_with("        crt: "))
        .unwrap();
    let mut swapped: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    swapped[id] = format!(
        "    id: {}",
        lines[crt].trim_start().trim_start_matches("crt: ")
    );
    let swapped = swapped.join("\n") + "\n";
    let path = lab.path("swapped.sops.yaml");
    std::fs::write(&path, &swapped).unwrap();
    let out = lab.sops().arg("decrypt").arg(&path).output().unwrap();
    assert!(!out.status.success(), "sops accepted a moved value");
    assert!(vixen_sops::decrypt(swapped.as_bytes(), Format::Yaml, &lab.keyring()).is_err());
}

#[test]
fn no_recipient_or_a_bad_one_is_refused_without_output() {
    let err = encrypt_yaml(&tree(), &[], "2026-12-03T14:00:00Z").unwrap_err();
    assert!(err.to_string().contains("no age recipient"), "{err}");
    let err = encrypt_yaml(&tree(), &["age1nope".into()], "2026-12-03T14:00:00Z").unwrap_err();
    assert!(err.to_string().contains("not an age recipient"), "{err}");
}
