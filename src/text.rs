//! Text that came from outside (tokens, requests, configs) made safe before
//! it is printed: shortened, so that an attacker cannot flood a log line or
//! a message, and escaped, so that it cannot forge a log line or hide a
//! verdict behind terminal escapes.

/// `clip_to(s, max)`: at most `max` characters of `s`, with "..." when
/// more were cut. `printable(s, max)`: the same, with control characters
/// (newlines, escape sequences) and bidirectional overrides written as
/// escapes (`\n`, `\u{1b}`). The client crate prints a provider's text by
/// the same rules, so these two are its, imported here.
pub(crate) use nats_oidc_client::text::{clip_to, printable};

/// At most 64 characters of `s`, with "..." when more were cut.
pub(crate) fn clip(s: &str) -> String {
    clip_to(s, 64)
}

/// One line of at most `max` characters: control characters become spaces.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clip_to(&flat, max)
}

/// A name (user, host, server) for a log line: `printable`, 256 characters.
pub(crate) fn name(s: &str) -> String {
    printable(s, 256)
}

/// A list of names (roles, scopes) for a log line: a JSON array of
/// strings, each `name`, so that JSON logs can carry it as an array.
pub(crate) fn list(items: &[String]) -> String {
    let shown: Vec<String> = items.iter().map(|s| name(s)).collect();
    serde_json::to_string(&shown).expect("strings serialize")
}

/// A reason for a log line or `explain`: `printable`, 1024 characters.
pub(crate) fn reason(s: &str) -> String {
    printable(s, 1024)
}

/// Several lines meant for a terminal (a JSON document `explain` prints):
/// each line as `printable` escapes it, whatever its length.
pub(crate) fn block(s: &str) -> String {
    s.split('\n')
        .map(|line| printable(line, usize::MAX))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A list for a message, at most ten items shown.
pub(crate) fn summarize(items: &[String]) -> String {
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
