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
pub(crate) const RESERVED: &str = "$SYS.>";

/// Whether an allow entry names the reserved subjects explicitly.
pub fn names_reserved(subject: &str) -> bool {
    subject == "$SYS" || subject.starts_with("$SYS.")
}

/// Whether some subject matches both patterns. A token holding a
/// placeholder (`{{sub}}`) is filled with one token, so it counts as `*`.
pub fn overlaps(a: &str, b: &str) -> bool {
    let filled = |t: &str| -> String {
        if t.contains("{{") {
            "*".into()
        } else {
            t.into()
        }
    };
    let (mut a, mut b) = (a.split('.').map(filled), b.split('.').map(filled));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == ">" || y == ">" => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            _ => return false,
        }
    }
}

/// Whether every subject `inner` matches also matches `outer` (both
/// permission-style patterns, no placeholders).
pub(crate) fn subsumes(outer: &str, inner: &str) -> bool {
    let (outer, inner): (Vec<&str>, Vec<&str>) =
        (outer.split('.').collect(), inner.split('.').collect());
    for (i, o) in outer.iter().enumerate() {
        if *o == ">" {
            return inner.len() > i;
        }
        match inner.get(i) {
            None | Some(&">") => return false,
            Some(&"*") if *o != "*" => return false,
            Some(t) if *o != "*" && o != t => return false,
            _ => {}
        }
    }
    inner.len() == outer.len()
}

/// A pattern that matches every subject either pattern does, and little
/// more: equal tokens stay, differing ones become `*`; where either has `>`
/// the join has it too, and where the two differ in length `>` stands for
/// the last token they both have.
pub(crate) fn join(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    let mut out: Vec<&str> = Vec::new();
    for i in 0.. {
        match (a.get(i), b.get(i)) {
            (None, None) => break,
            (Some(x), Some(y)) if *x != ">" && *y != ">" => {
                out.push(if x == y { x } else { "*" });
            }
            (Some(_), Some(_)) => {
                out.push(">");
                break;
            }
            _ => {
                out.pop();
                out.push(">");
                break;
            }
        }
    }
    out.join(".")
}

#[cfg(test)]
mod tests {
    use super::check_permission_subject as check;
    use super::{join, overlaps, subsumes};

    #[test]
    fn subsumption_and_join() {
        for (outer, inner) in [
            (">", "a.b"),
            ("a.>", "a.b.>"),
            ("a.*", "a.b"),
            ("a.*.c", "a.b.c"),
            ("a.b", "a.b"),
            ("a.>", "a.*"),
        ] {
            assert!(subsumes(outer, inner), "{outer} {inner}");
        }
        for (outer, inner) in [
            ("a.b", "a.*"),
            ("a.*", "a.>"),
            ("a.>", "a"),
            ("a.*", "a.b.c"),
            ("a.b.*", "a.b"),
        ] {
            assert!(!subsumes(outer, inner), "{outer} {inner}");
        }
        for (a, b, joined) in [
            ("a.x.>", "a.*.y", "a.*.>"),
            ("a.b", "a.c", "a.*"),
            ("a.b", "a.b.c", "a.>"),
            ("a.>", "a", ">"),
            ("a.>", "a.*.y", "a.>"),
            ("$KV.b.x.>", "$KV.b.*.y", "$KV.b.*.>"),
        ] {
            let j = join(a, b);
            assert_eq!(j, joined);
            assert!(subsumes(&j, a) && subsumes(&j, b), "{j}");
        }
    }

    #[test]
    fn patterns_overlap_when_one_subject_matches_both() {
        for (a, b) in [
            (">", "$KV.grants.x"),
            ("$KV.*.>", "$KV.grants.>"),
            ("$KV.grants.{{sub}}", "$KV.grants.>"),
            ("_INBOX.>", "_INBOX.abc"),
            ("a.*.c", "a.b.*"),
        ] {
            assert!(overlaps(a, b), "{a} {b}");
            assert!(overlaps(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("$KV.other.>", "$KV.grants.>"),
            ("a.>", "a"),
            ("a.b", "a.b.c"),
            ("a.*", "b.*"),
        ] {
            assert!(!overlaps(a, b), "{a} {b}");
            assert!(!overlaps(b, a), "{b} {a}");
        }
    }

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
