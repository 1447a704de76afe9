//! Committed test vectors in `tests/testdata/` (see its README): one check per file.

use std::path::{Path, PathBuf};

use vixen_sops::{Format, Keyring};

fn testdata() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("tests/testdata")
}

fn keyring() -> Keyring {
    Keyring::from_file(testdata().join("age.key")).expect("test key")
}

fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e != "md" && e != "key"))
        .collect();
    files.sort();
    files
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn good_vectors_decrypt_to_what_sops_printed() {
    let keys = keyring();
    let mut checked = 0;
    for path in files() {
        let file = name(&path);
        if file.starts_with("fail_") || !file.contains(".enc.") {
            continue;
        }
        let input = std::fs::read(&path).unwrap();
        let want =
            std::fs::read(path.with_file_name(file.replace(".enc", ""))).expect("expected output");
        let got = vixen_sops::decrypt(&input, Format::from_path(&path), &keys)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            String::from_utf8_lossy(got.as_bytes()),
            String::from_utf8_lossy(&want),
            "{file}"
        );
        assert!(
            vixen_sops::is_sops_file(&input, Format::from_path(&path)),
            "{file}"
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} vectors");
}

#[test]
fn fail_vectors_are_rejected_with_their_category() {
    let keys = keyring();
    let mut checked = 0;
    for path in files() {
        let file = name(&path);
        let Some(rest) = file.strip_prefix("fail_") else {
            continue;
        };
        let category = rest.split("__").next().unwrap();
        let input = std::fs::read(&path).unwrap();
        match vixen_sops::decrypt(&input, Format::from_path(&path), &keys) {
            Ok(_) => panic!("{file}: accepted"),
            Err(e) => {
                assert_eq!(e.category(), category, "{file}: {e}");
                assert!(
                    !e.to_string().contains("not-a-real-secret"),
                    "{file}: plaintext in error"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} fail vectors");
}
