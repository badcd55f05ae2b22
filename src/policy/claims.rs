//! Reading the identity and roles out of verified token claims.
//!
//! Claim locations are configured as a dot path (`realm_access.roles`) or, for
//! claim names that themselves contain dots or slashes (Auth0's namespaced
//! `https://example.com/roles`), as an RFC 6901 JSON pointer starting with `/`.

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimPath {
    Dotted(Vec<String>),
    Pointer(String),
}

impl ClaimPath {
    pub fn parse(path: &str) -> Result<ClaimPath, String> {
        if path.is_empty() {
            return Err("empty claim path".into());
        }
        if path.starts_with('/') {
            return Ok(ClaimPath::Pointer(path.to_string()));
        }
        let parts: Vec<String> = path.split('.').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!(
                "{path:?} has an empty segment; for claim names containing dots use a JSON pointer such as \"/https:~1~1example.com~1roles\""
            ));
        }
        Ok(ClaimPath::Dotted(parts))
    }

    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        match self {
            ClaimPath::Dotted(parts) => {
                let (first, rest) = parts.split_first()?;
                rest.iter()
                    .try_fold(claims.get(first)?, |v, p| v.as_object()?.get(p))
            }
            ClaimPath::Pointer(ptr) => {
                let (first, rest) = split_pointer_head(ptr)?;
                let head = claims.get(&first)?;
                if rest.is_empty() {
                    Some(head)
                } else {
                    head.pointer(rest)
                }
            }
        }
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimPath::Dotted(parts) => write!(f, "{}", parts.join(".")),
            ClaimPath::Pointer(p) => write!(f, "{p}"),
        }
    }
}

/// Splits "/a~1b/c" into ("a/b", "/c"), unescaping the first reference token.
fn split_pointer_head(ptr: &str) -> Option<(String, &str)> {
    let body = ptr.strip_prefix('/')?;
    let (head, rest) = match body.find('/') {
        Some(i) => (&body[..i], &body[i..]),
        None => (body, ""),
    };
    Some((head.replace("~1", "/").replace("~0", "~"), rest))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error("identity claim {0} is missing")]
    MissingUser(String),
    #[error("identity claim {0} must be a non-empty string")]
    UserNotString(String),
    #[error("roles claim {0} must be a string or an array of strings, found {1}")]
    RolesWrongType(String, &'static str),
    #[error("the identity is the email address but email_verified is {0}; only a verified address may name a user (oidc.email_verified)")]
    EmailNotVerified(&'static str),
}

/// How `email_verified` is treated when the identity claim is `email`: an
/// address the provider has not verified can be anyone's (a user who signs up
/// with someone else's address must not become them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailVerified {
    /// `email_verified` must be present and `true` (the default).
    Required,
    /// Refused only when `email_verified` is present and not `true`, as the
    /// Kubernetes OIDC authenticator does (for providers that omit it).
    IfPresent,
    /// Not looked at.
    Ignored,
}

impl EmailVerified {
    pub fn parse(value: &str) -> Result<EmailVerified, String> {
        match value {
            "required" => Ok(EmailVerified::Required),
            "if_present" => Ok(EmailVerified::IfPresent),
            "ignored" => Ok(EmailVerified::Ignored),
            other => Err(format!(
                "{other:?} is not one of \"required\", \"if_present\", \"ignored\""
            )),
        }
    }
}

/// Whether the identity claim is the email address, the case that needs
/// `email_verified`.
pub(crate) fn names_by_email(path: &ClaimPath) -> bool {
    match path {
        ClaimPath::Dotted(parts) => parts.len() == 1 && parts[0] == "email",
        ClaimPath::Pointer(p) => p == "/email",
    }
}

/// Checks `email_verified` when the identity comes from `email`.
pub(crate) fn check_email_verified(
    claims: &Map<String, Value>,
    user_claim: &ClaimPath,
    policy: EmailVerified,
) -> Result<(), ClaimError> {
    if !names_by_email(user_claim) || policy == EmailVerified::Ignored {
        return Ok(());
    }
    match (claims.get("email_verified"), policy) {
        (Some(Value::Bool(true)), _) => Ok(()),
        (None, EmailVerified::IfPresent) => Ok(()),
        (None, _) => Err(ClaimError::EmailNotVerified("missing")),
        (Some(Value::Bool(false)), _) => Err(ClaimError::EmailNotVerified("false")),
        // Some providers have sent "true" as a string; a strict reader does
        // not guess.
        (Some(v), _) => Err(ClaimError::EmailNotVerified(kind_of(v))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array with non-string items",
        Value::Object(_) => "an object",
    }
}

/// The user's name for NATS, from the configured identity claim.
pub(crate) fn user_name(
    claims: &Map<String, Value>,
    path: &ClaimPath,
) -> Result<String, ClaimError> {
    match path.lookup(claims) {
        None => Err(ClaimError::MissingUser(path.to_string())),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(ClaimError::UserNotString(path.to_string())),
    }
}

/// The token's roles. A missing claim is no roles (the token is then refused
/// for having no mapped role); a claim of the wrong type is an error, because
/// a provider sending something unexpected must not be read loosely.
pub(crate) fn roles(
    claims: &Map<String, Value>,
    path: &ClaimPath,
) -> Result<Vec<String>, ClaimError> {
    match path.lookup(claims) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(ClaimError::RolesWrongType(
                    path.to_string(),
                    kind_of(&Value::Array(vec![])),
                )),
            })
            .collect(),
        Some(other) => Err(ClaimError::RolesWrongType(path.to_string(), kind_of(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn dotted_path_reaches_nested_keycloak_roles() {
        let c = obj(json!({"realm_access": {"roles": ["admin", "reader"]}}));
        let p = ClaimPath::parse("realm_access.roles").unwrap();
        assert_eq!(roles(&c, &p).unwrap(), vec!["admin", "reader"]);
    }

    #[test]
    fn pointer_reaches_namespaced_auth0_claim() {
        let c = obj(
            json!({"https://example.com/roles": ["ops"], "https://example": {"com/roles": ["wrong"]}}),
        );
        let p = ClaimPath::parse("/https:~1~1example.com~1roles").unwrap();
        assert_eq!(roles(&c, &p).unwrap(), vec!["ops"]);
    }

    #[test]
    fn single_string_role_is_one_role_and_missing_is_none() {
        let p = ClaimPath::parse("roles").unwrap();
        assert_eq!(
            roles(&obj(json!({"roles": "admin"})), &p).unwrap(),
            vec!["admin"]
        );
        assert!(roles(&obj(json!({})), &p).unwrap().is_empty());
    }

    #[test]
    fn roles_of_wrong_type_are_an_error() {
        let p = ClaimPath::parse("roles").unwrap();
        for bad in [
            json!({"roles": 7}),
            json!({"roles": {"admin": true}}),
            json!({"roles": ["admin", 1]}),
            json!({"roles": null}),
        ] {
            assert!(roles(&obj(bad.clone()), &p).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_name_must_be_a_non_empty_string() {
        let p = ClaimPath::parse("preferred_username").unwrap();
        assert_eq!(
            user_name(&obj(json!({"preferred_username": "ana"})), &p).unwrap(),
            "ana"
        );
        assert!(user_name(&obj(json!({"preferred_username": ""})), &p).is_err());
        assert!(user_name(&obj(json!({"preferred_username": 5})), &p).is_err());
        assert!(matches!(
            user_name(&obj(json!({})), &p),
            Err(ClaimError::MissingUser(_))
        ));
    }

    #[test]
    fn email_identity_needs_a_verified_address() {
        let email = ClaimPath::parse("email").unwrap();
        let verified = obj(json!({"email": "a@x", "email_verified": true}));
        let unverified = obj(json!({"email": "a@x", "email_verified": false}));
        let silent = obj(json!({"email": "a@x"}));
        let stringly = obj(json!({"email": "a@x", "email_verified": "true"}));
        use EmailVerified::*;
        assert!(check_email_verified(&verified, &email, Required).is_ok());
        assert!(check_email_verified(&unverified, &email, Required).is_err());
        assert!(check_email_verified(&silent, &email, Required).is_err());
        assert!(check_email_verified(&stringly, &email, Required).is_err());
        assert!(check_email_verified(&silent, &email, IfPresent).is_ok());
        assert!(check_email_verified(&unverified, &email, IfPresent).is_err());
        assert!(check_email_verified(&unverified, &email, Ignored).is_ok());
        let other = ClaimPath::parse("preferred_username").unwrap();
        assert!(check_email_verified(&unverified, &other, Required).is_ok());
        let pointer = ClaimPath::parse("/email").unwrap();
        assert!(check_email_verified(&silent, &pointer, Required).is_err());
    }

    #[test]
    fn empty_segments_are_refused() {
        assert!(ClaimPath::parse("a..b").is_err());
        assert!(ClaimPath::parse("").is_err());
    }
}
