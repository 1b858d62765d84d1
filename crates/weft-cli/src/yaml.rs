//! `-o yaml`: a small YAML emitter for JSON values.
//!
//! The CLI only ever writes YAML (it never reads it), and the values are JSON, so block
//! style with a conservative quoting rule is all it takes: a string is written plain only
//! when no YAML 1.1 or 1.2 reader could take it for anything but that string (not a
//! number, boolean, null, date or indicator); otherwise it is double-quoted with escapes.
//! A multi-line string becomes a literal block (`|`), so PEM certificates stay readable.

use serde_json::{Map, Value};

/// The whole document for `v`, ending with a newline.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(m, 0, &mut out, false),
        Value::Array(a) if !a.is_empty() => write_seq(a, 0, &mut out, false),
        _ => {
            scalar(v, 2, &mut out);
            out.push('\n');
        }
    }
    out
}

/// Writes the entries of `m`, each on its own line at `indent`; the first one without
/// indentation when the cursor already stands after a `- `.
fn write_map(m: &Map<String, Value>, indent: usize, out: &mut String, first_inline: bool) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !first_inline {
            pad(indent, out);
        }
        string(k, usize::MAX, out);
        out.push(':');
        match v {
            Value::Object(c) if !c.is_empty() => {
                out.push('\n');
                write_map(c, indent + 2, out, false);
            }
            Value::Array(c) if !c.is_empty() => {
                out.push('\n');
                write_seq(c, indent + 2, out, false);
            }
            _ => {
                out.push(' ');
                scalar(v, indent + 2, out);
                out.push('\n');
            }
        }
    }
}

/// Writes the items of `a` as `- item` lines at `indent` (see [`write_map`] for
/// `first_inline`).
fn write_seq(a: &[Value], indent: usize, out: &mut String, first_inline: bool) {
    for (i, v) in a.iter().enumerate() {
        if i > 0 || !first_inline {
            pad(indent, out);
        }
        out.push_str("- ");
        match v {
            Value::Object(c) if !c.is_empty() => write_map(c, indent + 2, out, true),
            Value::Array(c) if !c.is_empty() => write_seq(c, indent + 2, out, true),
            _ => {
                scalar(v, indent + 2, out);
                out.push('\n');
            }
        }
    }
}

fn pad(indent: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Writes a scalar (or an empty collection) in place; `block_indent` is the indentation
/// of a literal block's lines.
fn scalar(v: &Value, block_indent: usize, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => string(s, block_indent, out),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

/// A number as YAML 1.1 and 1.2 readers both take it: a float with an exponent gets a
/// fraction and a signed exponent (`1e300` -> `1.0e+300`), which 1.1 requires.
fn number(n: &serde_json::Number) -> String {
    let s = n.to_string();
    if n.is_f64() {
        if let Some((m, e)) = s.split_once(['e', 'E']) {
            let m = if m.contains('.') {
                m.to_owned()
            } else {
                format!("{m}.0")
            };
            let sign = if e.starts_with(['+', '-']) { "" } else { "+" };
            return format!("{m}e{sign}{e}");
        }
    }
    s
}

/// Writes a string plain, as a literal block (`block_indent` of `usize::MAX`: never, as
/// for keys) or double-quoted.
fn string(s: &str, block_indent: usize, out: &mut String) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if block_indent != usize::MAX && is_block_safe(s) {
        literal_block(s, block_indent, out);
    } else {
        quoted(s, out);
    }
}

/// Words that YAML 1.1 or 1.2 readers take for booleans or null.
const RESERVED: [&str; 12] = [
    "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", "<<", "=",
];

/// Whether `s` reads back as this same string when written without quotes.
pub fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s)) {
        return false;
    }
    // Numbers, dates, times, `.inf` and `.nan` all start with a digit, a sign or a dot.
    if first.is_ascii_digit() || matches!(first, '+' | '-' | '.') {
        return false;
    }
    // Indicators that open something else at the start of a scalar.
    if "?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if s.starts_with(' ') || s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") {
        return false;
    }
    // Flow indicators anywhere would break the value inside a flow collection, and the
    // emitter keeps every string valid in any position.
    if s.contains(['[', ']', '{', '}', ',']) {
        return false;
    }
    s.chars().all(|c| !needs_escape(c) && c != '\t')
}

/// Whether `s` can be written as a literal block: several lines of printable text whose
/// first line does not start with a space (that would need an indentation indicator).
fn is_block_safe(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.chars()
            .all(|c| c == '\n' || c == '\t' || !needs_escape(c))
}

/// Writes `s` as `|`, `|-` or `|+` block with its lines at `indent`.
fn literal_block(s: &str, indent: usize, out: &mut String) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push_str(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            pad(indent, out);
            out.push_str(line);
        }
    }
    // The newlines kept by `|` or `|+` beyond the last line's (which the caller writes).
    for _ in 1..trailing {
        out.push('\n');
    }
}

/// Characters that must be escaped inside double quotes: control characters (C0, DEL,
/// C1), the line and paragraph separators and the byte order mark.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// Writes `s` double-quoted with YAML's escapes.
fn quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(s: &str) -> String {
        to_yaml(&json!(s)).trim_end_matches('\n').to_owned()
    }

    #[test]
    fn plain_strings_stay_plain() {
        for s in [
            "web",
            "alice@example",
            "eng-x",
            "a-b_c",
            "ünïcode",
            "a:b",
            "x#y",
        ] {
            assert_eq!(one(s), s, "{s}");
        }
    }

    #[test]
    fn strings_other_readers_would_retype_are_quoted() {
        for s in [
            "true",
            "False",
            "null",
            "~",
            "yes",
            "No",
            "on",
            "OFF",
            "y",
            "N",
            "123",
            "-1",
            "1.5",
            "+1",
            ".inf",
            ".NaN",
            "0x1f",
            "2024-01-02",
            "12:30",
            "",
            "<<",
            "=",
        ] {
            assert_eq!(one(s), format!("\"{s}\""), "{s}");
        }
    }

    #[test]
    fn indicators_and_separators_are_quoted() {
        for s in [
            "#eng",
            "@svc",
            "- x",
            "? x",
            "a: b",
            "a #c",
            "key:",
            " lead",
            "trail ",
            "[x]",
            "{x}",
            "a,b",
            "*alias",
            "&anchor",
            "!tag",
            "|x",
            ">x",
            "'q'",
            "\"dq\"",
            "%x",
            "`x",
            "tab\there",
        ] {
            let y = one(s);
            assert!(y.starts_with('"') && y.ends_with('"'), "{s:?} -> {y}");
        }
    }

    #[test]
    fn escapes_inside_quotes() {
        assert_eq!(one("\"q\" a\\b"), r#""\"q\" a\\b""#);
        // Inside a plain scalar, quotes and backslashes are ordinary characters.
        assert_eq!(one("a\"b\\c"), "a\"b\\c");
        assert_eq!(one("bell\u{7}"), r#""bell\u0007""#);
        assert_eq!(one("cr\r\nx"), r#""cr\r\nx""#);
        assert_eq!(one("\u{2028}"), r#""\u2028""#);
        assert_eq!(one(" two\nlines"), r#"" two\nlines""#);
    }

    #[test]
    fn multi_line_strings_are_literal_blocks() {
        let v = json!({"pem": "-----BEGIN-----\nAAA\n-----END-----\n", "two": "a\nb", "gap": "a\n\nb\n\n"});
        assert_eq!(
            to_yaml(&v),
            "gap: |+\n  a\n\n  b\n\npem: |\n  -----BEGIN-----\n  AAA\n  -----END-----\ntwo: |-\n  a\n  b\n"
        );
    }

    #[test]
    fn nested_structures() {
        let v = json!({
            "name": "web",
            "roleAttributes": ["eng", "#x"],
            "tags": {},
            "list": [],
            "n": 3,
            "ok": true,
            "none": null,
            "items": [{"a": 1, "b": {"c": "d"}}, ["x", "y"], "z"],
        });
        let expected = "\
items:
  - a: 1
    b:
      c: d
  - - x
    - \"y\"
  - z
list: []
\"n\": 3
name: web
none: null
ok: true
roleAttributes:
  - eng
  - \"#x\"
tags: {}
";
        assert_eq!(to_yaml(&v), expected);
    }

    #[test]
    fn keys_are_quoted_like_values_but_never_blocks() {
        let v = json!({"true": 1, "a: b": 2, "multi\nline": 3});
        assert_eq!(
            to_yaml(&v),
            "\"a: b\": 2\n\"multi\\nline\": 3\n\"true\": 1\n"
        );
    }

    #[test]
    fn top_level_scalars_and_empty_collections() {
        assert_eq!(to_yaml(&json!(null)), "null\n");
        assert_eq!(to_yaml(&json!([])), "[]\n");
        assert_eq!(to_yaml(&json!({})), "{}\n");
        assert_eq!(to_yaml(&json!(2.5)), "2.5\n");
        assert_eq!(to_yaml(&json!(1e300)), "1.0e+300\n");
        assert_eq!(to_yaml(&json!(-2.5e-7)), "-2.5e-7\n");
        assert_eq!(to_yaml(&json!([1, "two"])), "- 1\n- two\n");
    }
}
