//! Arbitrary bytes through every SOPS parser and emitter, and through `decrypt` with a
//! fixed key: nothing may panic. The first byte picks the format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vixen_sops::{Format, Keyring};

const FORMATS: [Format; 5] = [
    Format::Yaml,
    Format::Json,
    Format::Dotenv,
    Format::Ini,
    Format::Binary,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(selector) % FORMATS.len()];
    vixen_sops::fuzzing::load_and_emit(input, format);
    let _ = vixen_sops::is_sops_file(input, format);
    let _ = vixen_sops::decrypt(input, format, &Keyring::empty());
});
