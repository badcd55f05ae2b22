//! Reporting a config file's syntax errors without echoing a secret: the
//! value at fault may be a seed, a password or a token.

use crate::secrets;

/// Where a TOML error is ("line L, column C", plus the key written on that
/// line) and why, without ever echoing a value: the value at fault may be a
/// seed, a password or a token (an unquoted seed is a syntax error whose
/// span is the seed itself).
pub(super) fn describe_toml_error(e: &toml::de::Error, text: &str) -> (String, String) {
    let Some(span) = e.span() else {
        return ("(syntax)".into(), redact_values(e.message()));
    };
    let before = text.get(..span.start).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    // The key or table header written on the line helps find the place, but
    // a seed pasted there (as a key, or as a broken header) must not be shown.
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && k.len() <= 60)
        .or_else(|| Some(line.trim()).filter(|l| l.starts_with('[') && l.len() <= 60))
        .filter(|k| !secrets::has_seed_shape(k));
    // Under the nearest table header above, the key reads as the docs
    // name it (`callout.mode`).
    let table = text
        .lines()
        .take(line_no - 1)
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .last()
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim())
        .filter(|t| !t.is_empty() && t.len() <= 60 && !secrets::has_seed_shape(t));
    let place = match (table, key) {
        (Some(t), Some(k)) if !k.starts_with('[') => {
            format!("line {line_no}, column {column} ({t}.{k})")
        }
        (_, Some(k)) => format!("line {line_no}, column {column} ({k})"),
        (_, None) => format!("line {line_no}, column {column}"),
    };
    (place, redact_values(e.message()))
}

/// Replaces `quoted` values in a TOML message, keeping field names from
/// "unknown field" and "missing field" messages, which are useful and safe.
fn redact_values(message: &str) -> String {
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        // The unknown field's name is the input's: a seed pasted as a key.
        if !secrets::has_seed_shape(message) {
            return message.to_string();
        }
    }
    // Split on backticks: odd pieces were quoted. Punctuation such as `=`
    // is kept; anything longer is replaced.
    message
        .split('`')
        .enumerate()
        .map(|(i, piece)| match (i % 2, piece.chars().count()) {
            (0, _) => piece.to_string(),
            (_, n) if n <= 2 => format!("`{piece}`"),
            _ => "`<value>`".to_string(),
        })
        .collect()
}
