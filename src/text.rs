//! Text that came from outside (tokens, requests, configs) shortened before
//! it is printed, so that an attacker cannot flood a log line or a message.

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
}
