//! vixen against the real `sops`: documents covering every feature are encrypted by sops
//! at test time and vixen's output must equal `sops decrypt`, byte for byte.

mod common;

use common::{Lab, new_key, sops_or_skip};
use vixen_sops::{Error, Format, Keyring};

const TYPES_YAML: &str = r##"# a head comment
string: hello world
int: 12
negative: -7
float: 1.5
small: 0.000012
large: 1000000.5
huge: 1e23
bool_true: true
bool_false: false
empty: ""
nothing:
date: 2024-01-01
stamp: 2024-11-12T13:33:42.120Z
looks_bool: "yes"
looks_int: "123"
looks_null: "null"
colon: 'a: b'
tab: "tab\there"
emoji: "emoji 😀"
accents: "héllo wörld"
multiline: "line1\nline2\n"
multiline_keep: "a\n\n"
multiline_strip: "a\nb"
lead_space: " lead"
trail_space: "trail "
dash: "- dash"
hash: "#hash"
inner_hash: "a #b"
quote: "it's \"quoted\""
backslash: 'C:\path'
control: "bell\a"
long: aaaaaaaaaa bbbbbbbbbbbbb cccccccccccccc dddddddddddddd eeeeeeeeeeeeeeeee ffffffffffffffff gggggggggggggg hhhhhhhhhhhh
"quoted key": v
n: short key that go-yaml quotes
hex_unencrypted: 0x1F
octal_unencrypted: 0o17
float_unencrypted: 1e3
binary: !!binary aGVsbG8=
literal: |
  first
    second
  third
folded: >
  folded
  text
"##;

#[test]
fn yaml_all_types() {
    if !sops_or_skip("yaml_all_types") {
        return;
    }
    Lab::new().roundtrip("types.yaml", TYPES_YAML, Format::Yaml, &[]);
}

#[test]
fn yaml_nesting_and_anchors() {
    if !sops_or_skip("yaml_nesting_and_anchors") {
        return;
    }
    let doc = r#"cluster:
  name: prod
  secret: s3cr3t
  nodes:
    - name: cp1
      ip: 10.0.0.1
      labels:
        role: controlplane
        zone: a
    - name: cp2
      ip: 10.0.0.2
      taints: []
      extra: {}
  matrix:
    - [1, 2]
    - - a
      - b
  deep:
    a:
      b:
        c:
          d: end
flow: {a: 1, b: [x, y]}
base: &base
  q: 1
copy: *base
list_of_strings:
  - one
  - "two: 2"
  - |
    block in list
"#;
    Lab::new().roundtrip("nesting.yaml", doc, Format::Yaml, &[]);
}

#[test]
fn yaml_comments_where_sops_keeps_them() {
    if !sops_or_skip("yaml_comments_where_sops_keeps_them") {
        return;
    }
    let doc = r#"# top comment
# second line
a: 1 # trailing on a
nested:
  # head of nested
  x: 1
  y: 2 # trailing on y
  # foot of nested
list:
  # head of list
  - 1
  # between items
  - k: v # trailing in item
    # foot in item
  - 3
  # end of list
after: z
# end of document
"#;
    Lab::new().roundtrip("comments.yaml", doc, Format::Yaml, &[]);
}

#[test]
fn yaml_multi_document() {
    if !sops_or_skip("yaml_multi_document") {
        return;
    }
    let doc = "# first\na: 1\n---\n# second\nb: two\nc:\n  - 3\n---\nd: {e: f}\n";
    Lab::new().roundtrip("multi.yaml", doc, Format::Yaml, &[]);
}

#[test]
fn yaml_selection_rules() {
    if !sops_or_skip("yaml_selection_rules") {
        return;
    }
    let doc = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  token: abc\n  port: 80\ndata_enc: x\nplain_unencrypted: y\nlist:\n  - password: p\n    user: u\n";
    let lab = Lab::new();
    let cases: &[(&str, &[&str])] = &[
        (
            "regex",
            &["--encrypted-regex", "^(data|stringData|password)$"],
        ),
        (
            "unregex",
            &["--unencrypted-regex", "^(apiVersion|kind|user)$"],
        ),
        ("suffix", &["--encrypted-suffix", "_enc"]),
        ("unsuffix", &["--unencrypted-suffix", "_unencrypted"]),
        (
            "maconly",
            &[
                "--encrypted-regex",
                "^(stringData)$",
                "--mac-only-encrypted",
            ],
        ),
    ];
    for (name, args) in cases {
        lab.roundtrip(&format!("{name}.yaml"), doc, Format::Yaml, args);
    }
}

#[test]
fn yaml_comment_rules() {
    if !sops_or_skip("yaml_comment_rules") {
        return;
    }
    let doc = "# sops:enc\nsecret: a\nplain: b\nlist:\n  # sops:enc\n  - c\n  - d\n";
    let lab = Lab::new();
    lab.roundtrip(
        "cenc.yaml",
        doc,
        Format::Yaml,
        &["--encrypted-comment-regex", "sops:enc"],
    );
    lab.roundtrip(
        "cunenc.yaml",
        doc,
        Format::Yaml,
        &["--unencrypted-comment-regex", "sops:enc"],
    );
}

#[test]
fn mac_only_encrypted_ignores_changes_to_clear_values() {
    if !sops_or_skip("mac_only_encrypted_ignores_changes_to_clear_values") {
        return;
    }
    let lab = Lab::new();
    let enc = lab.encrypt(
        "mo.yaml",
        b"secret: a\nclear: b\n",
        &["--encrypted-regex", "^secret$", "--mac-only-encrypted"],
    );
    let edited = String::from_utf8(enc)
        .unwrap()
        .replace("clear: b", "clear: changed");
    let out =
        vixen_sops::decrypt(edited.as_bytes(), Format::Yaml, &lab.keyring()).expect("decrypts");
    assert!(String::from_utf8_lossy(out.as_bytes()).contains("clear: changed"));
}

#[test]
fn json_dotenv_ini_binary() {
    if !sops_or_skip("json_dotenv_ini_binary") {
        return;
    }
    let lab = Lab::new();
    let json = r#"{"a": "x<y>&z", "n": 12, "f": 1.5e-7, "big": 1e22, "t": true, "nul": null, "e": {}, "l": [], "nest": {"k": [1, "two", {"x": false}], "e2": "", "uni": "\u2028é😀\u0001"}}"#;
    lab.roundtrip("doc.json", json, Format::Json, &[]);
    lab.roundtrip(
        "doc.env",
        "A=1\n# comment\nB=hello world\nC=\"quoted\"\nD=multi\\nline\nE=\nF_unencrypted=clear\n",
        Format::Dotenv,
        &[],
    );
    lab.roundtrip("doc.ini", "; top\n[sec]\n# c1\nkey = value\nnum=12\nq = \"a b\"\n[other]\nx=1 ; trailing\nlonger_key = y\n", Format::Ini, &[]);
    let bin: Vec<u8> = (0..=255u8).chain(b"tail\n".iter().copied()).collect();
    let enc = lab.encrypt("blob.bin", &bin, &[]);
    let out = vixen_sops::decrypt(&enc, Format::Binary, &lab.keyring()).expect("binary");
    assert_eq!(out.as_bytes(), bin.as_slice());
    lab.assert_same("blob.bin", &enc, Format::Binary, &lab.keyring());
}

#[test]
fn several_recipients_any_key_opens() {
    if !sops_or_skip("several_recipients_any_key_opens") {
        return;
    }
    let lab = Lab::new();
    let (other_file, other) = new_key(lab.dir.path(), "other.txt");
    let enc = lab.encrypt_to(
        "multi.yaml",
        b"k: v\n",
        &[],
        &[lab.recipient.as_str(), other.as_str()],
    );
    let other_only = Keyring::from_file(&other_file).unwrap();
    let out = vixen_sops::decrypt(&enc, Format::Yaml, &other_only).expect("second recipient opens");
    assert_eq!(out.as_bytes(), b"k: v\n");
}

#[test]
fn wrong_key_lists_recipients() {
    if !sops_or_skip("wrong_key_lists_recipients") {
        return;
    }
    let lab = Lab::new();
    let enc = lab.encrypt("w.yaml", b"k: v\n", &[]);
    let (stranger, _) = new_key(lab.dir.path(), "stranger.txt");
    let err = vixen_sops::decrypt(&enc, Format::Yaml, &Keyring::from_file(stranger).unwrap())
        .unwrap_err();
    match &err {
        Error::NoMatchingKey { recipients, .. } => {
            assert_eq!(recipients, &vec![lab.recipient.clone()])
        }
        other => panic!("expected NoMatchingKey, got {other:?}"),
    }
    assert!(err.to_string().contains(&lab.recipient));
}

#[test]
fn shamir_key_groups() {
    if !sops_or_skip("shamir_key_groups") {
        return;
    }
    let lab = Lab::new();
    let (k2, r2) = new_key(lab.dir.path(), "k2.txt");
    let (k3, r3) = new_key(lab.dir.path(), "k3.txt");
    let config = lab.path("sops-config.yaml");
    let text = format!(
        "creation_rules:\n  - shamir_threshold: 2\n    key_groups:\n      - age: [{}]\n      - age: [{r2}]\n      - age: [{r3}]\n",
        lab.recipient
    );
    std::fs::write(&config, text).unwrap();
    let src = lab.path("groups.yaml");
    std::fs::write(&src, "secret: shared\nlist: [1, 2]\n").unwrap();
    let mut cmd = lab.sops();
    cmd.arg("--config").arg(&config).arg("encrypt").arg(&src);
    let enc = common::run(cmd);
    assert!(String::from_utf8_lossy(&enc).contains("key_groups"));

    let both = lab.path("k2k3.txt");
    let text = std::fs::read_to_string(&k2).unwrap() + &std::fs::read_to_string(&k3).unwrap();
    std::fs::write(&both, text).unwrap();
    let two = Keyring::from_file(&both).unwrap();
    lab.assert_same_with("groups.yaml", &enc, Format::Yaml, &two, &both);

    let err =
        vixen_sops::decrypt(&enc, Format::Yaml, &Keyring::from_file(&k3).unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotEnoughKeyGroups {
                opened: 1,
                threshold: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn ssh_ed25519_identity() {
    if !sops_or_skip("ssh_ed25519_identity") {
        return;
    }
    let lab = Lab::new();
    let key = lab.path("id_ed25519");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(&key)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("!!! SKIPPED ssh_ed25519_identity: ssh-keygen unavailable !!!");
        return;
    }
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let public = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let enc = lab.encrypt_to("ssh.yaml", b"k: v\n", &[], &[public.as_str()]);
    let out = vixen_sops::decrypt(&enc, Format::Yaml, &Keyring::from_file(&key).unwrap())
        .expect("ssh key opens");
    assert_eq!(out.as_bytes(), b"k: v\n");
}

/// One changed byte anywhere that matters must be caught.
#[test]
fn tampering_is_a_mac_mismatch() {
    if !sops_or_skip("tampering_is_a_mac_mismatch") {
        return;
    }
    let lab = Lab::new();
    let enc =
        String::from_utf8(lab.encrypt("t.yaml", b"a: hello\nb_unencrypted: clear\n", &[])).unwrap();
    let keys = lab.keyring();
    let flip_after = |marker: &str, skip: usize| {
        let at = enc.find(marker).unwrap() + marker.len() + skip;
        let mut bytes = enc.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        bytes
    };
    let cases = [
        ("value", flip_after("a: ENC[AES256_GCM,data:", 0)),
        ("mac", flip_after("mac: ENC[AES256_GCM,data:", 3)),
        (
            "lastmodified",
            enc.replacen("lastmodified: \"20", "lastmodified: \"19", 1)
                .into_bytes(),
        ),
        (
            "clear value",
            enc.replacen("clear", "cleaR", 1).into_bytes(),
        ),
        ("key name", enc.replacen("a: ENC", "x: ENC", 1).into_bytes()),
    ];
    for (what, bytes) in cases {
        let err = vixen_sops::decrypt(&bytes, Format::Yaml, &keys).unwrap_err();
        assert!(matches!(err, Error::MacMismatch), "{what}: {err:?}");
        assert!(err.to_string().contains("modified after it was encrypted"));
    }
}

#[test]
fn errors_never_show_plaintext() {
    if !sops_or_skip("errors_never_show_plaintext") {
        return;
    }
    let lab = Lab::new();
    let enc =
        String::from_utf8(lab.encrypt("p.yaml", b"cluster:\n  secret: TOPSECRET\n", &[])).unwrap();
    let broken = enc.replacen("type:str]", "type:wat]", 1);
    let err = vixen_sops::decrypt(broken.as_bytes(), Format::Yaml, &lab.keyring()).unwrap_err();
    assert!(
        matches!(&err, Error::MalformedValue { path, .. } if path == "cluster.secret"),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("TOPSECRET"));
    assert!(vixen_sops::is_sops_file(enc.as_bytes(), Format::Yaml));
    assert!(!vixen_sops::is_sops_file(b"cluster: {}\n", Format::Yaml));
}

/// Random strings full of YAML-significant characters: vixen must quote them exactly as
/// go-yaml does, as values and as keys, encrypted and in clear.
#[test]
fn yaml_random_strings_quote_like_go_yaml() {
    if !sops_or_skip("yaml_random_strings_quote_like_go_yaml") {
        return;
    }
    const PIECES: &[&str] = &[
        " ",
        "  ",
        "\t",
        "\n",
        ":",
        ": ",
        "#",
        " #",
        "-",
        "- ",
        "?",
        "'",
        "\"",
        "\\",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&",
        "*",
        "!",
        "|",
        ">",
        "%",
        "@",
        "`",
        "é",
        "😀",
        "\r",
        "\u{85}",
        "\u{a0}",
        "\u{2028}",
        "\u{feff}",
        "\u{1}",
        "0",
        "12",
        "1.5",
        "1e3",
        "0x1F",
        "true",
        "no",
        "null",
        "~",
        ".",
        "...",
        "---",
        "a",
        "word",
        "2024-01-01",
        "1:20",
        "_",
        "=",
        "<<",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut doc = String::new();
    for i in 0..300 {
        let len = next(5);
        let s: String = (0..len).map(|_| PIECES[next(PIECES.len())]).collect();
        let key = if i % 3 == 0 {
            format!("{}{i}", s.replace('\n', " "))
        } else {
            format!("k{i}")
        };
        let key = if i % 5 == 0 {
            format!("{key}_unencrypted")
        } else {
            key
        };
        doc.push_str(&format!("{}: {}\n", quote(&key), quote(&s)));
    }
    Lab::new().roundtrip("random.yaml", &doc, Format::Yaml, &[]);
}

/// A YAML double-quoted scalar that reads back as exactly `s`.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}
