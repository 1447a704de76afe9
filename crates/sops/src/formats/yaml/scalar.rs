//! YAML scalars as go-yaml v3 (which sops uses) reads and writes them: plain-scalar type
//! resolution, timestamps, the choice of quoting style, and float formatting.

use crate::tree::Value;
use crate::walk::parse_go_float;

/// What a plain scalar resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    Str,
    Null,
    Bool,
    Int,
    Float,
    Timestamp,
    Merge,
}

/// Resolves an untagged plain scalar to a value, like go-yaml v3 plus sops' time support.
/// `None` for integers that do not fit in an `i64` (sops cannot walk those either).
pub(super) fn resolve_plain(s: &str) -> Option<Value> {
    Some(match resolve(s) {
        (Tag::Null, _) => Value::Null,
        (Tag::Bool, _) => Value::Bool(matches!(s, "true" | "True" | "TRUE")),
        (Tag::Int, Some(n)) => Value::Int(n),
        (Tag::Int, None) => return None,
        (Tag::Float, _) => Value::Float(yaml_float(s)?),
        (Tag::Timestamp, _) => Value::Time(parse_timestamp(s)?),
        (Tag::Str | Tag::Merge, _) => Value::str(s),
    })
}

/// The tag go-yaml's `resolve("", s)` gives, and the integer value when it is one.
pub(super) fn resolve(s: &str) -> (Tag, Option<i64>) {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return (Tag::Null, None),
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return (Tag::Bool, None),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return (Tag::Float, None),
        "<<" => return (Tag::Merge, None),
        _ => {}
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return (Tag::Str, None);
    }
    if parse_timestamp(s).is_some() {
        return (Tag::Timestamp, None);
    }
    let plain = s.replace('_', "");
    if let Some(n) = go_parse_int(&plain) {
        return (Tag::Int, n);
    }
    if is_yaml_float(&plain) && parse_go_float(&plain).is_some() {
        return (Tag::Float, None);
    }
    (Tag::Str, None)
}

/// Go's `strconv.ParseInt(s, 0, 64)` (and `ParseUint` for the range above `i64`):
/// `Some(Some(n))` for an `i64`, `Some(None)` for a valid integer out of range.
fn go_parse_int(s: &str) -> Option<Option<i64>> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) =
        if let Some(d) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, d)
        } else if let Some(d) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (8, d)
        } else if let Some(d) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (2, d)
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok();
    let value = magnitude.and_then(|m| {
        let m = i128::try_from(m).ok()?;
        i64::try_from(if neg { -m } else { m }).ok()
    });
    if value.is_none() && (neg || magnitude.is_none_or(|m| m > u128::from(u64::MAX))) {
        return None; // neither ParseInt nor ParseUint accepts it: maybe a float
    }
    Some(value)
}

/// go-yaml's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    } else {
        if !digits(&mut i) {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

fn yaml_float(s: &str) -> Option<f64> {
    match s.trim_start_matches('+') {
        ".inf" | ".Inf" | ".INF" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        _ => parse_go_float(&s.replace('_', "")),
    }
}

/// go-yaml's timestamp forms (`2006-1-2`, `2006-1-2T15:4:5.999999999Z07:00`, with `t` or a
/// space, the last without zone) printed as Go's `time.RFC3339Nano`.
pub(super) fn parse_timestamp(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    let mut i = 5;
    let num = |i: &mut usize, max: usize| -> Option<u32> {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() && *i - start < max {
            *i += 1;
        }
        if *i == start {
            None
        } else {
            s[start..*i].parse().ok()
        }
    };
    let year: u32 = s[..4].parse().ok()?;
    let month = num(&mut i, 2)?;
    if b.get(i) != Some(&b'-') {
        return None;
    }
    i += 1;
    let day = num(&mut i, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let date = format!("{year:04}-{month:02}-{day:02}");
    if i == b.len() {
        return Some(format!("{date}T00:00:00Z"));
    }
    let sep = b[i];
    if !matches!(sep, b'T' | b't' | b' ') {
        return None;
    }
    i += 1;
    let two = |i: &mut usize| num(i, 2);
    let hour = two(&mut i)?;
    if b.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    let minute = two(&mut i)?;
    if b.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    let second = two(&mut i)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut frac = "";
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 9 {
            return None;
        }
        frac = s[start..i].trim_end_matches('0');
    }
    let zone = match &s[i..] {
        "" if sep == b' ' => "Z".to_string(),
        "Z" if sep != b' ' => "Z".to_string(),
        z if sep != b' '
            && z.len() == 6
            && matches!(z.as_bytes()[0], b'+' | b'-')
            && z.as_bytes()[3] == b':'
            && z[1..3]
                .bytes()
                .chain(z[4..].bytes())
                .all(|c| c.is_ascii_digit()) =>
        {
            if &z[1..] == "00:00" {
                "Z".to_string()
            } else {
                z.to_string()
            }
        }
        _ => return None,
    };
    let dot = if frac.is_empty() { "" } else { "." };
    Some(format!(
        "{date}T{hour:02}:{minute:02}:{second:02}{dot}{frac}{zone}"
    ))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)` with go-yaml's spellings of inf and NaN.
pub(super) fn format_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let e = format!("{:e}", f.abs());
    let (mant, exp) = e.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("exponent is an integer");
    let sign = if f < 0.0 { "-" } else { "" };
    // Shortest 'g' switches to an exponent below 1e-4 and from 1e6 (precision 6).
    if !(-4..6).contains(&exp) {
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{mant}e{esign}{:02}", exp.abs());
    }
    format!("{f}")
}

/// How a string scalar is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

/// What go-yaml's emitter learns about a scalar before choosing its style.
struct Analysis {
    multiline: bool,
    block_plain: bool,
    single: bool,
    block: bool,
}

pub(super) fn is_printable(c: char) -> bool {
    let n = c as u32;
    n == 0x0A
        || (0x20..=0x7E).contains(&n)
        || (0xA0..=0xD7FF).contains(&n)
        || ((0xE000..=0xFFFD).contains(&n) && n != 0xFEFF)
}

pub(super) fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            multiline: false,
            block_plain: true,
            single: true,
            block: false,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let mut block_ind = s.starts_with("---") || s.starts_with("...");
    let (mut line_breaks, mut special, mut tabs) = (false, false, false);
    let (mut lead_space, mut lead_break, mut trail_space, mut trail_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break, mut prev_space, mut prev_break) =
        (false, false, false, false);
    let mut preceded_ws = true;
    let blankz =
        |c: Option<&char>| matches!(c, None | Some(' ' | '\t')) || c.is_some_and(|c| is_break(*c));
    for (i, &c) in chars.iter().enumerate() {
        let followed_ws = blankz(chars.get(i + 1));
        let last = i + 1 == chars.len();
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_ind = true,
                '?' | ':' | '-' if followed_ws => block_ind = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_ws => block_ind = true,
                '#' if preceded_ws => block_ind = true,
                _ => {}
            }
        }
        if c == '\t' {
            tabs = true;
        } else if !is_printable(c) {
            special = true;
        }
        if c == ' ' {
            lead_space |= i == 0;
            trail_space |= last;
            break_space |= prev_break;
            prev_space = true;
            prev_break = false;
        } else if is_break(c) {
            line_breaks = true;
            lead_break |= i == 0;
            trail_break |= last;
            space_break |= prev_space;
            prev_space = false;
            prev_break = true;
        } else {
            prev_space = false;
            prev_break = false;
        }
        preceded_ws = blankz(Some(&c));
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain: true,
        single: true,
        block: true,
    };
    if lead_space || lead_break || trail_space || trail_break {
        a.block_plain = false;
    }
    if trail_space {
        a.block = false;
    }
    if break_space || space_break || tabs || special {
        a.block_plain = false;
        a.single = false;
    }
    if space_break || special {
        a.block = false;
    }
    if line_breaks || block_ind {
        a.block_plain = false;
    }
    a
}

fn is_old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// go-yaml's `isBase60Float`: `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
fn is_base60_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int_part, frac) = match s.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (s, None),
    };
    if frac.is_some_and(|f| !f.bytes().all(|c| c.is_ascii_digit() || c == b'_')) {
        return false;
    }
    let mut parts = int_part.split(':');
    let head = parts.next().unwrap_or("");
    let head_ok = head.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && head.bytes().all(|c| c.is_ascii_digit() || c == b'_');
    let mut n = 0;
    for p in parts {
        n += 1;
        let ok = match p.as_bytes() {
            [a] => a.is_ascii_digit(),
            [a, b] => (b'0'..=b'5').contains(a) && b.is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    head_ok && n > 0
}

/// The style go-yaml ends with for a string, after sops' encode-then-reparse round trip.
pub(super) fn string_style(s: &str, key: bool) -> Style {
    let can_plain = resolve(s).0 == Tag::Str && !is_base60_float(s) && !is_old_bool(s);
    let requested = if s.contains('\n') {
        Style::Literal
    } else if can_plain {
        Style::Plain
    } else {
        Style::Double
    };
    let a = analyze(s);
    let first = select(requested, &a, false, s.is_empty());
    select(first, &a, key, s.is_empty())
}

fn select(mut style: Style, a: &Analysis, key: bool, empty: bool) -> Style {
    if key && a.multiline {
        style = Style::Double;
    }
    if style == Style::Plain && (!a.block_plain || (empty && key)) {
        style = Style::Single;
    }
    if style == Style::Single && !a.single {
        style = Style::Double;
    }
    if style == Style::Literal && (!a.block || key) {
        style = Style::Double;
    }
    style
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_go_g() {
        assert_eq!(format_float(1.5), "1.5");
        assert_eq!(format_float(1000000.5), "1.0000005e+06");
        assert_eq!(format_float(1e-7), "1e-07");
        assert_eq!(format_float(1e23), "1e+23");
        assert_eq!(format_float(123456.0), "123456");
        assert_eq!(format_float(1e6), "1e+06");
        assert_eq!(format_float(0.0001), "0.0001");
        assert_eq!(format_float(-2.5e-5), "-2.5e-05");
    }

    #[test]
    fn styles_like_go_yaml() {
        let cases = [
            ("hello", Style::Plain),
            ("yes", Style::Double),
            ("123", Style::Double),
            ("a: b", Style::Single),
            ("tab\there", Style::Double),
            (" lead", Style::Single),
            ("- dash", Style::Single),
            ("#hash", Style::Single),
            ("a #b", Style::Single),
            ("line1\nline2\n", Style::Literal),
            ("", Style::Double),
            ("2024-01-01", Style::Double),
            ("1:20", Style::Double),
        ];
        for (s, want) in cases {
            assert_eq!(string_style(s, false), want, "{s:?}");
        }
        assert_eq!(string_style("a\nb", true), Style::Double);
    }

    #[test]
    fn resolves_like_go_yaml() {
        assert!(matches!(resolve_plain("0x1F"), Some(Value::Int(31))));
        assert!(matches!(resolve_plain("017"), Some(Value::Int(15))));
        assert!(matches!(resolve_plain("1_000"), Some(Value::Int(1000))));
        assert!(matches!(resolve_plain("1e3"), Some(Value::Float(f)) if f == 1000.0));
        assert!(matches!(resolve_plain("yes"), Some(Value::Str(_))));
        assert!(matches!(resolve_plain("~"), Some(Value::Null)));
        assert!(
            matches!(resolve_plain("2024-01-01"), Some(Value::Time(t)) if t == "2024-01-01T00:00:00Z")
        );
        assert!(matches!(
            resolve_plain("100000000000000000000000"),
            Some(Value::Float(_))
        ));
    }
}
