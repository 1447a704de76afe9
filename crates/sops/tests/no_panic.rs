//! The fuzz target's property on stable Rust: no input makes a parser or emitter panic.

use proptest::prelude::*;
use vixen_sops::{Format, Keyring};

const FORMATS: [Format; 5] = [
    Format::Yaml,
    Format::Json,
    Format::Dotenv,
    Format::Ini,
    Format::Binary,
];

/// Fragments that steer random inputs into the interesting paths.
const PIECES: &[&str] = &[
    "sops:\n",
    "  mac: ",
    "ENC[AES256_GCM,data:AA==,iv:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]",
    "lastmodified: \"2024-01-01T00:00:00Z\"\n",
    "a: ",
    "- ",
    "  ",
    "\n",
    "#c\n",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    "|\n",
    "? ",
    ": ",
    "&x ",
    "*x",
    "!!binary ",
    "\u{2028}",
    "\u{feff}",
    "[sops]\n",
    "sops_mac=",
    "=",
    ",",
    "\"sops\": {",
    "\"mac\": ",
    "age:\n",
    "    - recipient: age1x\n      enc: x\n",
    "key_groups: [",
    "1e999",
    "0x",
];

fn structured() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0..PIECES.len(), 0..40).prop_map(|ix| {
        ix.into_iter()
            .flat_map(|i| PIECES[i].as_bytes().to_vec())
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), f in 0..5usize) {
        vixen_sops::fuzzing::load_and_emit(&data, FORMATS[f]);
        let _ = vixen_sops::decrypt(&data, FORMATS[f], &Keyring::empty());
    }

    #[test]
    fn structured_inputs_never_panic(data in structured(), f in 0..5usize) {
        vixen_sops::fuzzing::load_and_emit(&data, FORMATS[f]);
        let _ = vixen_sops::is_sops_file(&data, FORMATS[f]);
        let _ = vixen_sops::decrypt(&data, FORMATS[f], &Keyring::empty());
    }
}
