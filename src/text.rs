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
    clipped
        .chars()
        .map(|c| {
            if needs_escape(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A name (user, host, server) for a log line: `printable`, 256 characters.
pub fn name(s: &str) -> String {
    printable(s, 256)
}

/// A reason for a log line or `explain`: `printable`, 1024 characters.
pub fn reason(s: &str) -> String {
    printable(s, 1024)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
        assert!(!reason(&"x\r\n".repeat(2000)).contains('\n'));
        assert!(reason(&"x".repeat(5000)).len() <= 1027);
    }
}
