//! JSON (and the binary envelope): a small order-preserving parser and Go-style output.
//!
//! Like sops 3.7–3.11, every number is read as a float64. Output follows sops: Go's
//! `json.Marshal` for leaves (HTML-safe escapes, shortest floats) and `json.Indent` with
//! one tab per level.

use zeroize::Zeroizing;

use super::{Document, take_sops};
use crate::Format;
use crate::error::{Error, Result};
use crate::tree::{Item, SecretBytes, Value};
use crate::walk::parse_go_float;

/// Deepest nesting accepted (keeps the recursive parser off the stack limit).
const MAX_DEPTH: usize = 256;

pub(super) fn load(input: &[u8], format: Format) -> Result<Document> {
    let mut p = Parser {
        s: input,
        i: 0,
        format,
    };
    p.ws();
    if p.peek() != Some(b'{') {
        return Err(p.err("the top level is not an object"));
    }
    let Value::Map(mut branch) = p.value(0)? else {
        unreachable!("checked for an object")
    };
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected data after the top-level object"));
    }
    let metadata = take_sops(&mut branch).ok_or(Error::NotSopsFile(format))?;
    Ok(Document {
        branches: vec![branch],
        metadata,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    format: Format,
}

impl Parser<'_> {
    fn err(&self, reason: &str) -> Error {
        let end = self.i.min(self.s.len());
        let line = self.s[..end].iter().filter(|&&c| c == b'\n').count() + 1;
        Error::Parse {
            format: self.format,
            line: Some(line),
            reason: reason.to_string(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", c as char)))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        self.ws();
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Value::Map(items));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    let key = String::from_utf8(key.to_vec())
                        .map_err(|_| self.err("key is not UTF-8"))?;
                    self.eat(b':')?;
                    let v = self.value(depth + 1)?;
                    items.push(Item::Pair(key, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Value::Map(items));
                        }
                        _ => return Err(self.err("expected `,` or `}`")),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut list = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Value::Seq(list));
                }
                loop {
                    list.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::Seq(list));
                        }
                        _ => return Err(self.err("expected `,` or `]`")),
                    }
                }
            }
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b't') => self.word("true", Value::Bool(true)),
            Some(b'f') => self.word("false", Value::Bool(false)),
            Some(b'n') => self.word("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err("expected a value")),
        }
    }

    fn word(&mut self, w: &str, v: Value) -> Result<Value> {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.i;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.i += 1;
        }
        let text =
            std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.err("bad number"))?;
        parse_go_float(text)
            .filter(|f| f.is_finite())
            .map(Value::Float)
            .ok_or_else(|| self.err("bad number"))
    }

    fn string(&mut self) -> Result<SecretBytes> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a string"));
        }
        self.i += 1;
        let mut out = Zeroizing::new(Vec::new());
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            self.i += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 1;
                    let simple = match e {
                        b'"' => Some(b'"'),
                        b'\\' => Some(b'\\'),
                        b'/' => Some(b'/'),
                        b'b' => Some(8),
                        b'f' => Some(12),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'u' => None,
                        _ => return Err(self.err("invalid escape")),
                    };
                    if let Some(b) = simple {
                        out.push(b);
                        continue;
                    }
                    let mut cp = self.hex4()?;
                    if (0xD800..0xDC00).contains(&cp) && self.s[self.i..].starts_with(b"\\u") {
                        let save = self.i;
                        self.i += 2;
                        let lo = self.hex4()?;
                        if (0xDC00..0xE000).contains(&lo) {
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        } else {
                            self.i = save;
                        }
                    }
                    let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(self.err("control character in string")),
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("bad \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.err("bad \\u escape"))?;
        let cp = u32::from_str_radix(text, 16).map_err(|_| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(cp)
    }
}

/// Prints one branch like sops' JSON store (with a final newline, as `sops decrypt` does).
pub(super) fn emit(branch: &[Item]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    map(&mut out, branch, 0);
    out.push(b'\n');
    out
}

fn indent(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    out.extend(std::iter::repeat_n(b'\t', depth));
}

fn map(out: &mut Vec<u8>, items: &[Item], depth: usize) {
    let pairs: Vec<(&String, &Value)> = items
        .iter()
        .filter_map(|i| match i {
            Item::Pair(k, v) => Some((k, v)),
            Item::Comment(_) => None,
        })
        .collect();
    if pairs.is_empty() {
        out.extend_from_slice(b"{}");
        return;
    }
    out.push(b'{');
    for (n, (k, v)) in pairs.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        indent(out, depth + 1);
        string(out, k.as_bytes());
        out.extend_from_slice(b": ");
        value(out, v, depth + 1);
    }
    indent(out, depth);
    out.push(b'}');
}

fn value(out: &mut Vec<u8>, v: &Value, depth: usize) {
    match v {
        Value::Map(items) => map(out, items, depth),
        Value::Seq(list) => {
            let list: Vec<&Value> = list
                .iter()
                .filter(|v| !matches!(v, Value::Comment(_)))
                .collect();
            if list.is_empty() {
                out.extend_from_slice(b"[]");
                return;
            }
            out.push(b'[');
            for (n, v) in list.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                indent(out, depth + 1);
                value(out, v, depth + 1);
            }
            indent(out, depth);
            out.push(b']');
        }
        Value::Str(b) | Value::Comment(b) => string(out, b),
        Value::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Float(f) => out.extend_from_slice(go_json_float(*f).as_bytes()),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Time(t) => string(out, t.as_bytes()),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

/// Go's `encoding/json` float format: `'f'` between 1e-6 and 1e21, else `'e'` with a
/// short negative exponent.
pub(crate) fn go_json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        let digits = if sign == '+' && digits.len() < 2 {
            format!("0{digits}")
        } else {
            digits.to_string()
        };
        format!("{mant}e{sign}{digits}")
    } else {
        format!("{f}")
    }
}

/// Go's `json.Marshal` for a string (with HTML escaping and invalid UTF-8 replaced).
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\u{8}' => out.extend_from_slice(b"\\b"),
                '\u{c}' => out.extend_from_slice(b"\\f"),
                c if (c as u32) < 0x20
                    || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') =>
                {
                    let n = c as u32;
                    out.extend_from_slice(b"\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(HEX[((n >> shift) & 15) as usize]);
                    }
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_go_json() {
        assert_eq!(go_json_float(1.5e-7), "1.5e-7");
        assert_eq!(go_json_float(1e22), "1e+22");
        assert_eq!(go_json_float(12.0), "12");
        assert_eq!(go_json_float(0.000001), "0.000001");
    }

    #[test]
    fn strings_like_go_json() {
        let mut out = Vec::new();
        string(&mut out, "x<y>&z\u{2028}\t\u{1}é".as_bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""x\u003cy\u003e\u0026z\u2028\t\u0001é""#
        );
    }
}
