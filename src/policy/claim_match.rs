//! Matching a token's claims against values the config names: an issuer's
//! `require_claims` and the `match` of `[[bindings]]`.
//!
//! A value is an exact string, a glob (`*` is any run of characters, none
//! included, and every other character only itself; the pattern covers the
//! whole value, case-sensitively) or a list meaning any of them. Strings,
//! integers and booleans in a token compare by their JSON text; anything
//! else (a missing claim, null, a float, an array, an object) matches
//! nothing, because a reader that guessed what a platform meant by it could
//! admit the wrong workload.

use serde_json::{Map, Value};

use crate::policy::claims::ClaimPath;

/// One accepted value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    /// The literal pieces between the `*`s, so `a*b*` is `["a", "b", ""]`.
    Glob(Vec<String>),
}

impl Pattern {
    pub fn parse(text: &str) -> Pattern {
        if text.contains('*') {
            Pattern::Glob(text.split('*').map(str::to_string).collect())
        } else {
            Pattern::Exact(text.to_string())
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self, Pattern::Exact(_))
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(want) => want == value,
            Pattern::Glob(pieces) => glob_matches(pieces, value),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Exact(s) => write!(f, "{s:?}"),
            Pattern::Glob(pieces) => write!(f, "{:?}", pieces.join("*")),
        }
    }
}

/// Anchored at both ends; between them each piece is taken at its first
/// occurrence, which is enough when `*` is the only wildcard: an earlier
/// match never leaves less room for the pieces after it.
fn glob_matches(pieces: &[String], value: &str) -> bool {
    let (first, rest) = match pieces.split_first() {
        Some(split) => split,
        None => return value.is_empty(),
    };
    let Some(mut left) = value.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        // No `*` at all: the whole value is the first piece.
        return left.is_empty();
    };
    for piece in middle {
        match left.find(piece.as_str()) {
            Some(at) => left = &left[at + piece.len()..],
            None => return false,
        }
    }
    left.len() >= last.len() && left.ends_with(last.as_str())
}

/// A claim and the values it may have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMatch {
    /// As the config wrote it, for messages.
    pub name: String,
    pub path: ClaimPath,
    pub any_of: Vec<Pattern>,
}

/// Why a claim did not match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    Missing,
    /// The claim is there but is no string, integer or boolean.
    NotScalar(&'static str),
    /// The claim's value (as JSON text) is none of the accepted ones.
    Other(String),
}

impl ClaimMatch {
    pub fn check(&self, claims: &Map<String, Value>) -> Result<(), Miss> {
        let text = match self.path.lookup(claims) {
            None => return Err(Miss::Missing),
            Some(v) => scalar_text(v)?,
        };
        if self.any_of.iter().any(|p| p.matches(&text)) {
            Ok(())
        } else {
            Err(Miss::Other(text))
        }
    }

    /// Whether this pins one exact value (or a list of exact values).
    pub fn is_exact(&self) -> bool {
        self.any_of.iter().all(Pattern::is_exact)
    }

    /// What the claim must be, for messages: `repository = "acme/orders"`.
    pub fn wanted(&self) -> String {
        match self.any_of.as_slice() {
            [one] => format!("{} = {one}", self.name),
            many => format!(
                "{} in [{}]",
                self.name,
                many.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Why `miss` fails this match, with the token's value made safe to
    /// print (it is the token's, so anyone's).
    pub fn explain(&self, miss: &Miss) -> String {
        match miss {
            Miss::Missing => format!("claim {} is missing (wanted {})", self.name, self.wanted()),
            Miss::NotScalar(kind) => format!(
                "claim {} is {kind}, not a string, integer or boolean (wanted {})",
                self.name,
                self.wanted()
            ),
            // Quoted with its own quotes escaped: the value is the token's.
            Miss::Other(value) => format!(
                "claim {} is {:?} (wanted {})",
                self.name,
                crate::text::name(value),
                self.wanted()
            ),
        }
    }
}

/// Strings as they are; integers and booleans as their JSON text.
fn scalar_text(v: &Value) -> Result<String, Miss> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Value::Number(_) => Err(Miss::NotScalar("a fractional number")),
        Value::Null => Err(Miss::NotScalar("null")),
        Value::Array(_) => Err(Miss::NotScalar("an array")),
        Value::Object(_) => Err(Miss::NotScalar("an object")),
    }
}

/// Every match must hold; the first that does not, with why.
pub(crate) fn first_miss<'a>(
    matches: &'a [ClaimMatch],
    claims: &Map<String, Value>,
) -> Option<(&'a ClaimMatch, Miss)> {
    matches
        .iter()
        .find_map(|m| m.check(claims).err().map(|miss| (m, miss)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn glob(p: &str, v: &str) -> bool {
        Pattern::parse(p).matches(v)
    }

    #[test]
    fn a_star_is_any_run_and_everything_else_is_itself() {
        let sa = "system:serviceaccount:orders:*";
        assert!(glob(sa, "system:serviceaccount:orders:worker"));
        assert!(glob(sa, "system:serviceaccount:orders:"), "none included");
        assert!(glob(sa, "system:serviceaccount:orders:a:b/c.d"));
        assert!(!glob(sa, "system:serviceaccount:orders2:worker"));
        assert!(!glob(sa, "system:serviceaccount:Orders:worker"));
        assert!(!glob(sa, "xsystem:serviceaccount:orders:worker"));
        assert!(glob("*", ""));
        assert!(glob("a*a", "aa"));
        assert!(!glob("a*a", "a"), "pieces may not overlap");
        assert!(glob(
            "*.yml@refs/heads/main",
            "acme/ci/.github/workflows/d.yml@refs/heads/main"
        ));
        assert!(!glob(
            "*.yml@refs/heads/main",
            "acme/ci/d.yml@refs/heads/main2"
        ));
        assert!(glob("a*b*c", "abbbc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(glob("ref?", "ref?"), "only * is special");
        assert!(!glob("ref?", "refs"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn integers_and_booleans_compare_by_their_json_text_and_nothing_else_matches() {
        let m = |v: &str| ClaimMatch {
            name: "x".into(),
            path: ClaimPath::parse("x").unwrap(),
            any_of: vec![Pattern::parse(v)],
        };
        let claims = |v: Value| json!({ "x": v }).as_object().unwrap().clone();
        assert!(m("42").check(&claims(json!(42))).is_ok());
        assert!(m("42").check(&claims(json!("42"))).is_ok());
        assert!(m("true").check(&claims(json!(true))).is_ok());
        assert_eq!(
            m("42").check(&claims(json!(42.0))),
            Err(Miss::NotScalar("a fractional number"))
        );
        assert_eq!(
            m("*").check(&claims(json!(["a"]))),
            Err(Miss::NotScalar("an array"))
        );
        assert_eq!(
            m("*").check(&claims(json!(null))),
            Err(Miss::NotScalar("null"))
        );
        assert_eq!(
            m("*").check(&json!({}).as_object().unwrap().clone()),
            Err(Miss::Missing)
        );
    }
}
