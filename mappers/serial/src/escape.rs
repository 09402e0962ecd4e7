//! Bytes written as configuration text: requests, terminators and write
//! templates.
//!
//! Two forms:
//!
//! * **Text with escapes**: every character stands for its UTF-8 bytes, except
//!   the escapes `\r` (13), `\n` (10), `\t` (9), `\\` (a backslash) and
//!   `\xNN` (the byte with the two hex digits `NN`, e.g. `\x02` for STX).
//!   Any other backslash sequence, a lone trailing backslash or a `\x` without
//!   two hex digits is an error naming it and its position.
//! * **Hex**: `hex:` followed by hex bytes, separated by spaces, commas or
//!   nothing (`hex:01 03 00 00 00 0A C5 CD`, `hex:0103`). Each byte is two hex
//!   digits.
//!
//! YAML note: in a double-quoted YAML string (`"W\r\n"`) YAML itself turns
//! `\r\n` into the control characters, which then stand for themselves; in a
//! plain or single-quoted string the backslashes reach the mapper and are the
//! escapes above. Both give the same bytes.

use std::fmt::Write as _;

/// Parses configuration text (see the module docs) into bytes.
///
/// # Errors
/// A message naming the malformed escape or hex byte and its position
/// (0-based character index in `text`).
pub fn parse(text: &str) -> Result<Vec<u8>, String> {
    match text.strip_prefix("hex:") {
        Some(hex) => parse_hex(hex),
        None => unescape(text),
    }
}

fn hex_digit(c: char) -> Option<u8> {
    c.to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, u8)> = None;
    for (i, c) in hex.chars().enumerate() {
        let pos = i + 4;
        if c == ' ' || c == ',' || c == '\t' {
            if let Some((at, _)) = pending {
                return Err(format!(
                    "`hex:` bytes are two hex digits each: a lone digit at character {at}"
                ));
            }
            continue;
        }
        let Some(d) = hex_digit(c) else {
            return Err(format!(
                "`hex:` has `{c}` at character {pos}, not a hex digit"
            ));
        };
        pending = match pending {
            None => Some((pos, d)),
            Some((_, hi)) => {
                out.push(hi << 4 | d);
                None
            }
        };
    }
    if let Some((at, _)) = pending {
        return Err(format!(
            "`hex:` bytes are two hex digits each: a lone digit at character {at}"
        ));
    }
    if out.is_empty() {
        return Err("`hex:` holds no bytes".into());
    }
    Ok(out)
}

fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars().enumerate();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some((_, 'r')) => out.push(b'\r'),
            Some((_, 'n')) => out.push(b'\n'),
            Some((_, 't')) => out.push(b'\t'),
            Some((_, '\\')) => out.push(b'\\'),
            Some((_, 'x')) => {
                let hi = chars.next().and_then(|(_, c)| hex_digit(c));
                let lo = chars.next().and_then(|(_, c)| hex_digit(c));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => {
                        return Err(format!(
                            "escape `\\x` at character {i} needs two hex digits (`\\x0D`)"
                        ));
                    }
                }
            }
            Some((_, other)) => {
                return Err(format!(
                    "unknown escape `\\{other}` at character {i}; use \\r, \\n, \\t, \\\\ or \\xNN"
                ));
            }
            None => {
                return Err(format!(
                    "lone `\\` at the end (character {i}); write `\\\\` for a backslash"
                ));
            }
        }
    }
    Ok(out)
}

/// Bytes as readable text for logs and errors: printable ASCII as is, the rest
/// as the escapes [`parse`] reads (`\r`, `\n`, `\t`, `\\`, `\xNN`), cut after
/// `max` input bytes with `...`.
pub fn show(bytes: &[u8], max: usize) -> String {
    let mut s = String::with_capacity(bytes.len().min(max) + 8);
    for &b in bytes.iter().take(max) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\x{b:02X}");
            }
        }
    }
    if bytes.len() > max {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes() {
        assert_eq!(parse("W\\r\\n").unwrap(), b"W\r\n");
        assert_eq!(parse("a\\tb\\\\c").unwrap(), b"a\tb\\c");
        assert_eq!(parse("\\x02PV\\x03").unwrap(), b"\x02PV\x03");
        assert_eq!(parse("\\xff\\x0a").unwrap(), [0xff, 0x0a]);
        // Control characters YAML already decoded stand for themselves.
        assert_eq!(parse("W\r\n").unwrap(), b"W\r\n");
        assert_eq!(parse("°C").unwrap(), "°C".as_bytes());
        assert_eq!(parse("").unwrap(), b"");
    }

    #[test]
    fn malformed_escapes_are_named() {
        let e = parse("W\\q").unwrap_err();
        assert!(e.contains("unknown escape `\\q` at character 1"), "{e}");
        let e = parse("ab\\x4").unwrap_err();
        assert!(
            e.contains("`\\x` at character 2 needs two hex digits"),
            "{e}"
        );
        let e = parse("\\xZZ").unwrap_err();
        assert!(e.contains("needs two hex digits"), "{e}");
        let e = parse("abc\\").unwrap_err();
        assert!(e.contains("lone `\\` at the end (character 3)"), "{e}");
    }

    #[test]
    fn hex_form() {
        assert_eq!(
            parse("hex:01 03 00 00 00 0A C5 CD").unwrap(),
            [0x01, 0x03, 0, 0, 0, 0x0a, 0xc5, 0xcd]
        );
        assert_eq!(parse("hex:0103,ff").unwrap(), [1, 3, 0xff]);
        let e = parse("hex:01 0G").unwrap_err();
        assert!(e.contains("`G` at character 8, not a hex digit"), "{e}");
        let e = parse("hex:01 3 04").unwrap_err();
        assert!(e.contains("lone digit at character 7"), "{e}");
        let e = parse("hex:010").unwrap_err();
        assert!(e.contains("lone digit"), "{e}");
        assert!(parse("hex:").unwrap_err().contains("no bytes"));
    }

    #[test]
    fn show_round_trips_through_parse() {
        let raw = b"ST,GS,+0012.34kg\r\n\x00\xff\\\t";
        let text = show(raw, 100);
        assert_eq!(text, "ST,GS,+0012.34kg\\r\\n\\x00\\xFF\\\\\\t");
        assert_eq!(parse(&text).unwrap(), raw);
        assert_eq!(show(b"abcdef", 3), "abc...");
    }
}
