//! Text from outside (a provider's error, a token's claim) made safe to
//! print: shortened, so it cannot flood a line, and escaped, so it cannot
//! forge a line or paint the terminal. The service prints with the same
//! rules (it imports these).

/// At most `max` characters of `s`, with "..." when more were cut.
///
/// ```
/// use nats_oidc_client::text::clip_to;
///
/// assert_eq!(clip_to("abcdef", 3), "abc...");
/// assert_eq!(clip_to("abc", 3), "abc");
/// ```
pub fn clip_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}...", &s[..cut]),
    }
}

/// A value from a token, a request or a provider as a log line or a
/// terminal may show it: at most `max` characters, with control characters
/// (newlines, escape sequences) and bidirectional overrides written as
/// escapes (`\n`, `\u{1b}`).
///
/// ```
/// use nats_oidc_client::text::printable;
///
/// assert_eq!(printable("ana\nuser=root", 64), "ana\\nuser=root");
/// assert_eq!(printable("\u{1b}[2Kok", 64), "\\u{1b}[2Kok");
/// ```
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

/// Control characters, and every character Rust's `Debug` would not print
/// as itself (format characters such as zero-width spaces and
/// bidirectional overrides, line and paragraph separators, unassigned
/// code points): what a terminal or a log viewer might render invisibly
/// or use to reorder the text around it.
fn needs_escape(c: char) -> bool {
    !matches!(c, '"' | '\'' | '\\') && c.escape_debug().next() == Some('\\')
}

/// Text from a provider or a library, made safe for one line of output:
/// trimmed, `printable`, cut at 300 characters. A provider's text never
/// paints the terminal.
pub(crate) fn escaped_line(text: &str) -> String {
    printable(text.trim(), 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_text_is_one_bounded_escaped_line() {
        assert_eq!(escaped_line(" a\nb\r\tc "), "a\\nb\\r\\tc");
        assert_eq!(escaped_line("x\u{1b}[2J\u{202e}"), "x\\u{1b}[2J\\u{202e}");
        let long = "x".repeat(400);
        assert_eq!(escaped_line(&long).len(), 303);
    }
}
