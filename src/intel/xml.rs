//! XML text helpers: drop characters XML 1.0 forbids, escape the five markup characters, trim
//! long values. Every value that reaches a document passes through [`text`] or [`attr`].

use std::fmt::Write as _;

/// True for characters an XML 1.0 document may contain (the `Char` production). Rust strings
/// cannot hold lone surrogates, so only C0 controls and U+FFFE / U+FFFF need rejecting.
pub fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `s` without the characters XML 1.0 forbids, so documents stay well-formed whatever TC holds.
pub fn clean(s: &str) -> String {
    s.chars().filter(|&c| allowed(c)).collect()
}

/// Element content: cleaned, with `& < > " '` escaped and CR kept as `&#13;` (parsers would
/// otherwise fold it into LF, so values would not round-trip).
pub fn text(s: &str) -> String {
    escape(s, false)
}

/// Attribute value: as [`text`], and tab / LF as character references too (parsers turn them
/// into spaces in attributes).
pub fn attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, in_attr: bool) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars().filter(|&c| allowed(c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' if in_attr => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `s`; when cut, ends with "…" (inside the limit) and says so.
pub fn truncate(s: &str, max: usize) -> (String, bool) {
    match s.char_indices().nth(max) {
        None => (s.to_string(), false),
        Some(_) => {
            let keep: String = s.chars().take(max.saturating_sub(1)).collect();
            (format!("{}…", keep.trim_end()), true)
        }
    }
}

/// A value made safe for a one-line log message: at most `max` characters, controls shown as
/// escapes (so a hostile summary cannot forge log lines).
pub fn for_log(s: &str, max: usize) -> String {
    let (cut, _) = truncate(s, max);
    let mut out = String::with_capacity(cut.len());
    for c in cut.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_forbidden_characters() {
        assert_eq!(
            text("a<b>&\"c'\u{0}\u{1b}\u{FFFE}\u{FFFF}\t\n\r\u{1F600}"),
            "a&lt;b&gt;&amp;&quot;c&apos;\t\n&#13;\u{1F600}"
        );
        assert_eq!(attr("x\ty\nz"), "x&#9;y&#10;z");
        assert_eq!(clean("a\u{7}b\u{85}c"), "ab\u{85}c");
    }

    #[test]
    fn truncates_on_characters_not_bytes() {
        assert_eq!(truncate("héllo", 5), ("héllo".to_string(), false));
        assert_eq!(truncate("héllo wörld", 5), ("héll…".to_string(), true));
        assert_eq!(for_log("a\nb", 10), "a\\nb");
    }
}
