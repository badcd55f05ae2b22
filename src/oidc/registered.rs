//! The registered claims (RFC 7519), checked in this one place after the
//! signature verified: JSON types as the RFC defines them, exact issuer,
//! required audience, `exp` never extended by leeway (the NATS user JWT
//! expires with the token), `nbf` and `iat` with leeway. Access tokens and
//! back-channel logout tokens differ only in what `Expected` says.

use serde_json::{Map, Value};

use crate::oidc::error::TokenError;
use crate::oidc::settings::Settings;
use crate::text::clip;

/// What one kind of token must carry beyond the rules every kind shares.
pub(super) struct Expected<'a> {
    /// `aud` must hold one of these.
    pub(super) audience: &'a [String],
    /// The config key that names them, for the message.
    pub(super) audience_key: &'static str,
    /// Whether `iat` must be present (logout tokens: Back-Channel Logout
    /// 1.0 §2.4); when present it is always checked.
    pub(super) iat_required: bool,
}

/// The times a token's checked claims carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Times {
    pub(super) exp: u64,
    pub(super) iat: Option<u64>,
}

/// The `iss` claim, typed strictly.
pub(super) fn issuer_claim(iss: Option<&Value>) -> Result<&str, TokenError> {
    match iss {
        Some(Value::String(iss)) => Ok(iss),
        Some(_) => Err(TokenError::ClaimType {
            claim: "iss",
            expected: "a string",
        }),
        None => Err(TokenError::MissingClaim("iss")),
    }
}

fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                Ok(Some(f.floor() as u64))
            }
            _ => Err(TokenError::ClaimType {
                claim: name,
                expected: "a non-negative NumericDate",
            }),
        },
        Some(_) => Err(TokenError::ClaimType {
            claim: name,
            expected: "a NumericDate (a JSON number)",
        }),
    }
}

/// Checks the registered claims at `now` against `oidc` and what this
/// kind of token must carry (`expected`).
pub(super) fn check_claims(
    claims: &Map<String, Value>,
    oidc: &Settings,
    expected: &Expected<'_>,
    now: u64,
) -> Result<Times, TokenError> {
    let iss = issuer_claim(claims.get("iss"))?;
    if iss != oidc.issuer {
        return Err(TokenError::Issuer {
            found: clip(iss),
            expected: oidc.issuer.clone(),
        });
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        None => return Err(TokenError::MissingClaim("aud")),
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().ok_or(TokenError::ClaimType {
                    claim: "aud",
                    expected: "a string or an array of strings",
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(TokenError::ClaimType {
                claim: "aud",
                expected: "a string or an array of strings",
            })
        }
    };
    if !audiences
        .iter()
        .any(|a| expected.audience.iter().any(|c| c == a))
    {
        // Clipped: the list is the token's, as long as its sender made it.
        return Err(TokenError::Audience {
            found: clip(&format!("{audiences:?}")),
            key: expected.audience_key,
        });
    }
    if let Some(sub) = claims.get("sub") {
        if !sub.is_string() {
            return Err(TokenError::ClaimType {
                claim: "sub",
                expected: "a string",
            });
        }
    }
    let leeway = oidc.leeway.as_secs();
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if exp <= now {
        return Err(TokenError::Expired { exp, now });
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if nbf > now + leeway {
            return Err(TokenError::NotYetValid { nbf, now, leeway });
        }
    }
    let iat = numeric_date(claims, "iat")?;
    match iat {
        None if expected.iat_required => return Err(TokenError::MissingClaim("iat")),
        Some(iat) if iat > now + leeway => {
            return Err(TokenError::IssuedInFuture { iat, now, leeway })
        }
        _ => {}
    }
    Ok(Times { exp, iat })
}
