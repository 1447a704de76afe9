//! Writing YAML string scalars as libyaml/go-yaml does: plain, single-quoted (with its
//! indentation after line-break characters), double-quoted (libyaml's escapes) and literal
//! blocks (with indentation and chomping indicators).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::scalar::{Style, is_break, is_printable, string_style};

/// Writes a double-quoted scalar with libyaml's escapes.
pub(super) fn write_double(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    // go-yaml tests for a byte order mark at the start of the value, not at each
    // character: after a leading BOM every character is escaped.
    let leading_bom = s.starts_with('\u{feff}');
    for c in s.chars() {
        let esc = match c {
            '\0' => Some("0"),
            '\u{7}' => Some("a"),
            '\u{8}' => Some("b"),
            '\t' => Some("t"),
            '\n' => Some("n"),
            '\u{b}' => Some("v"),
            '\u{c}' => Some("f"),
            '\r' => Some("r"),
            '\u{1b}' => Some("e"),
            '"' => Some("\""),
            '\\' => Some("\\"),
            '\u{85}' => Some("N"),
            '\u{a0}' => Some("_"),
            '\u{2028}' => Some("L"),
            '\u{2029}' => Some("P"),
            _ => None,
        };
        let n = c as u32;
        if let Some(e) = esc.filter(|_| !is_printable(c) || is_break(c) || c == '"' || c == '\\') {
            out.push(b'\\');
            out.extend_from_slice(e.as_bytes());
        } else if !is_printable(c) || c == '\u{feff}' || leading_bom {
            let text = if n <= 0xFF {
                format!("\\x{n:02X}")
            } else if n <= 0xFFFF {
                format!("\\u{n:04X}")
            } else {
                format!("\\U{n:08X}")
            };
            out.extend_from_slice(text.as_bytes());
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out.push(b'"');
}

/// Writes a string scalar (not its indentation) in the chosen style. `indent` is the
/// column of literal block content.
pub(super) fn write_string(out: &mut Vec<u8>, bytes: &[u8], key: bool, indent: usize) {
    let Ok(s) = std::str::from_utf8(bytes) else {
        out.extend_from_slice(b"!!binary ");
        out.extend_from_slice(STANDARD.encode(bytes).as_bytes());
        return;
    };
    if s == "<<" && !key {
        // go-yaml writes the merge-key lookalike with an explicit tag.
        out.extend_from_slice(b"!!merge <<");
        return;
    }
    match string_style(s, key) {
        Style::Plain => out.extend_from_slice(s.as_bytes()),
        Style::Single => write_single(out, s, indent),
        Style::Double => write_double(out, s),
        Style::Literal => write_literal(out, s, indent),
    }
}

/// Single quotes; a line break character (U+2028/U+2029 can get here) is followed by the
/// indentation before the next character, as libyaml's writer does.
fn write_single(out: &mut Vec<u8>, s: &str, indent: usize) {
    out.push(b'\'');
    let mut after_break = false;
    for c in s.chars() {
        if is_break(c) {
            after_break = true;
        } else if after_break {
            out.extend(std::iter::repeat_n(b' ', indent));
            after_break = false;
        }
        if c == '\'' {
            out.extend_from_slice(b"''");
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out.push(b'\'');
}

/// True when go-yaml cannot write the key as a simple key (`key: value`) and uses the
/// explicit form (`? key` / `: value`): multi-line keys and keys over 128 bytes.
pub(super) fn needs_explicit_key(key: &str) -> bool {
    key.len() > 128 || key.chars().any(is_break)
}

fn write_literal(out: &mut Vec<u8>, s: &str, indent: usize) {
    out.push(b'|');
    let first = s.chars().next();
    if first.is_some_and(|c| c == ' ' || is_break(c)) {
        out.push(b'4');
    }
    let mut rev = s.chars().rev();
    match (rev.next(), rev.next()) {
        (Some(c), _) if !is_break(c) => out.push(b'-'),
        (Some(_), None) => out.push(b'+'),
        (Some(_), Some(p)) if is_break(p) => out.push(b'+'),
        _ => {}
    }
    out.push(b'\n');
    let mut at_line_start = true;
    for c in s.chars() {
        if is_break(c) {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            at_line_start = true;
        } else {
            if at_line_start {
                out.extend(std::iter::repeat_n(b' ', indent));
                at_line_start = false;
            }
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}
