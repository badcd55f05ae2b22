//! Text that came from outside (tokens, requests, configs) made safe before
//! it is printed: shortened, so that an attacker cannot flood a log line or
//! a message, and escaped, so that it cannot forge a log line or hide a
//! verdict behind terminal escapes.

/// At most 64 characters of `s`, with "..." when more were cut.
pub fn clip(s: &str) -> String {
    clip_to(s, 64)
}

/// At most `max` characters of `s`, with "..." when more were cut.
pub fn clip_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}...", &s[..cut]),
    }
}

/// One line of at most `max` characters: control characters become spaces.
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clip_to(&flat, max)
}

/// A value from a token or a request as a log line or a terminal may show
/// it: at most `max` characters, with control characters (newlines, escape
/// sequences) and bidirectional overrides written as escapes (`\n`,
/// `\u{1b}`).
pub fn printable(s: &str, max: usize) -> String {
    let clipped = clip_to(s, max);
    if !clipped.chars().any(needs_escape) {
        return clipped;
    }
    escape_where(&clipped, needs_escape)
}

/// A name (user, host, server) for a log line: `printable`, 256 characters.
pub fn name(s: &str) -> String {
    printable(s, 256)
}

/// A list of names (roles, scopes) for a log line: a JSON array of
/// strings, each `name`, so that JSON logs can carry it as an array.
pub fn list(items: &[String]) -> String {
    let shown: Vec<String> = items.iter().map(|s| name(s)).collect();
    serde_json::to_string(&shown).expect("strings serialize")
}

/// A reason for a log line or `explain`: `printable`, 1024 characters.
pub fn reason(s: &str) -> String {
    printable(s, 1024)
}

/// Several lines meant for a terminal (a JSON document `explain` prints):
/// each line as `printable` escapes it, whatever its length.
pub fn block(s: &str) -> String {
    escape_where(s, |c| c != '\n' && needs_escape(c))
}

/// `s` with each character `escape` picks written as its escape.
fn escape_where(s: &str, escape: impl Fn(char) -> bool) -> String {
    s.chars()
        .map(|c| {
            if escape(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Control characters, and every character Rust's `Debug` would not print
/// as itself (format characters such as zero-width spaces and
/// bidirectional overrides, line and paragraph separators, unassigned
/// code points): what a terminal or a log viewer might render invisibly
/// or use to reorder the text around it.
fn needs_escape(c: char) -> bool {
    !matches!(c, '"' | '\'' | '\\') && c.escape_debug().next() == Some('\\')
}

/// A list for a message, at most ten items shown.
pub fn summarize(items: &[String]) -> String {
    const MAX: usize = 10;
    if items.is_empty() {
        return "[] (none)".into();
    }
    let shown: Vec<&str> = items.iter().take(MAX).map(String::as_str).collect();
    if items.len() > MAX {
        format!("{shown:?} and {} more", items.len() - MAX)
    } else {
        format!("{shown:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        assert_eq!(clip(&"é".repeat(70)), format!("{}...", "é".repeat(64)));
        assert_eq!(one_line("a\nb\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc...");
        let many: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        assert!(summarize(&many).ends_with("and 2 more"));
        assert_eq!(summarize(&[]), "[] (none)");
    }

    #[test]
    fn printed_values_cannot_forge_lines_or_hide_behind_escapes() {
        assert_eq!(name("ana"), "ana");
        assert_eq!(
            name("ana\nresult=\"allowed\" user=root"),
            "ana\\nresult=\"allowed\" user=root"
        );
        assert_eq!(name("\u{1b}[2Kok"), "\\u{1b}[2Kok");
        assert_eq!(name("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(block("{\n  \"a\u{202e}\"\n}"), "{\n  \"a\\u{202e}\"\n}");
        for invisible in [
            '\u{200b}', '\u{2028}', '\u{2029}', '\u{061c}', '\u{feff}', '\u{2066}',
        ] {
            let shown = name(&format!("a{invisible}b"));
            assert!(!shown.contains(invisible), "{invisible:?} shown raw");
        }
        assert_eq!(
            name("o'brien \"q\" a\\b é ü 日本"),
            "o'brien \"q\" a\\b é ü 日本"
        );
        assert!(!reason(&"x\r\n".repeat(2000)).contains('\n'));
        assert!(reason(&"x".repeat(5000)).len() <= 1027);
    }
}
