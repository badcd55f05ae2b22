//! NATS subject syntax for permission entries.
//!
//! nats-server silently ignores or rejects malformed permission subjects in a
//! user JWT; catching them when the config loads turns a runtime surprise into a
//! config error that names the entry.

/// Checks one permission subject: dot-separated non-empty tokens, no
/// whitespace, `*` only as a whole token, `>` only as the whole last token.
pub fn check_permission_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("empty subject".into());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "subject {subject:?} contains whitespace or control characters"
        ));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!("subject {subject:?} has an empty token"));
        }
        if token.len() > 1 && (token.contains('*') || token.contains('>')) {
            return Err(format!(
                "subject {subject:?}: wildcards must stand alone as a whole token, found {token:?}"
            ));
        }
        if *token == ">" && i != last {
            return Err(format!(
                "subject {subject:?}: '>' may only be the last token"
            ));
        }
    }
    Ok(())
}

/// Subjects no wildcard grant reaches: the account's system subjects (server
/// and account internals, and the auth callout subject). Only an allow entry
/// that names `$SYS` itself grants them.
pub const RESERVED: &str = "$SYS.>";

/// Whether an allow entry names the reserved subjects explicitly.
pub fn names_reserved(subject: &str) -> bool {
    subject == "$SYS" || subject.starts_with("$SYS.")
}

#[cfg(test)]
mod tests {
    use super::check_permission_subject as check;

    #[test]
    fn accepts_literal_and_wildcard_subjects() {
        for s in [
            ">",
            "orders.>",
            "orders.*.new",
            "_INBOX.>",
            "$SYS.REQ.USER.AUTH",
            "a",
        ] {
            assert!(check(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn rejects_malformed_subjects() {
        for s in [
            "", "orders.", ".orders", "a..b", "a b", "a.>.b", "a.b*", "a.>x", "a\tb",
        ] {
            assert!(check(s).is_err(), "{s:?} should be refused");
        }
    }
}
