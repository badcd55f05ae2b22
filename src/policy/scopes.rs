//! Scoped connections: a user entitled to thousands of resources (chat
//! rooms, devices, tenants) asks for the few this connection uses, and its
//! user JWT carries only those. Granted = asked ∩ entitled; `{{scope}}`
//! entries of the user's roles expand to one subject per granted scope.
//!
//! The client asks in its connect name, the one field every NATS client lets
//! a user set (`nats --connection-name`, async-nats `ConnectOptions::name`):
//! a word `scope=room-1,room-2` anywhere in the name.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::policy::claims::ClaimPath;

pub(crate) const PREFIX: &str = "scope=";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScopeError {
    #[error(
        "the connect name asks for {asked} scopes, more than grants.max_requested_scopes ({max})"
    )]
    TooMany { asked: usize, max: usize },
    #[error("the connect name has more than one scope= word")]
    Repeated,
    #[error("the connect name's scope= list has an empty entry")]
    Empty,
    #[error("scopes claim {0} is not a string or an array of strings")]
    Claim(String),
}

/// The scopes a connect name asks for, in the order asked, without repeats.
pub(crate) fn requested(connect_name: Option<&str>, max: usize) -> Result<Vec<String>, ScopeError> {
    let Some(name) = connect_name else {
        return Ok(Vec::new());
    };
    let mut words = name
        .split_whitespace()
        .filter_map(|w| w.strip_prefix(PREFIX));
    let Some(list) = words.next() else {
        return Ok(Vec::new());
    };
    if words.next().is_some() {
        return Err(ScopeError::Repeated);
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for item in list.split(',') {
        if item.is_empty() {
            return Err(ScopeError::Empty);
        }
        if seen.insert(item) {
            out.push(item.to_string());
        }
        // Count before building anything large: the name is the client's.
        if out.len() > max {
            return Err(ScopeError::TooMany {
                asked: list.split(',').count(),
                max,
            });
        }
    }
    Ok(out)
}

/// What the verified token entitles its user to, from `oidc.scopes_claim`.
pub(crate) fn entitled_by_claim(
    claims: &Map<String, Value>,
    path: &ClaimPath,
) -> Result<BTreeSet<String>, ScopeError> {
    match path.lookup(claims) {
        None => Ok(BTreeSet::new()),
        Some(Value::String(s)) => Ok(BTreeSet::from([s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ScopeError::Claim(path.to_string()))
            })
            .collect(),
        Some(_) => Err(ScopeError::Claim(path.to_string())),
    }
}

/// Asked ∩ entitled, in the order asked.
pub(crate) fn grant(requested: &[String], entitled: &BTreeSet<String>) -> Vec<String> {
    requested
        .iter()
        .filter(|s| entitled.contains(*s))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_connect_name_carries_the_request() {
        assert_eq!(requested(None, 8).unwrap(), strs(&[]));
        assert_eq!(requested(Some("chat-app"), 8).unwrap(), strs(&[]));
        assert_eq!(
            requested(Some("chat-app scope=r-2,r-1,r-2 v1.2"), 8).unwrap(),
            strs(&["r-2", "r-1"])
        );
        assert_eq!(requested(Some("scope=a,,b"), 8), Err(ScopeError::Empty));
        assert_eq!(
            requested(Some("scope=a scope=b"), 8),
            Err(ScopeError::Repeated)
        );
        assert!(matches!(
            requested(Some(&format!("scope={}", ["x"; 3].join(","))), 8),
            Ok(v) if v.len() == 1
        ));
        let many: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
        assert_eq!(
            requested(Some(&format!("scope={}", many.join(","))), 8),
            Err(ScopeError::TooMany { asked: 100, max: 8 })
        );
    }

    #[test]
    fn only_what_is_both_asked_and_entitled_is_granted() {
        let entitled = BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()]);
        assert_eq!(grant(&strs(&["c", "x", "a"]), &entitled), strs(&["c", "a"]));
        assert_eq!(grant(&strs(&[]), &entitled), strs(&[]));
        let claims = serde_json::json!({"rooms": ["a", "b"], "bad": [1]});
        let claims = claims.as_object().unwrap();
        let path = |p: &str| ClaimPath::parse(p).unwrap();
        assert_eq!(entitled_by_claim(claims, &path("rooms")).unwrap().len(), 2);
        assert!(entitled_by_claim(claims, &path("missing"))
            .unwrap()
            .is_empty());
        assert!(entitled_by_claim(claims, &path("bad")).is_err());
    }
}
