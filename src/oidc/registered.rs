//! The registered claims (RFC 7519), checked in this one place after the
//! signature verified: JSON types as the RFC defines them, exact issuer,
//! required audience, `exp` never extended by leeway (the NATS user JWT
//! expires with the token), `nbf` and `iat` with leeway.

use serde_json::{Map, Value};

use crate::oidc::error::TokenError;
use crate::oidc::settings::Settings;

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

/// Checks the registered claims at `now`; returns `exp`.
pub(super) fn check_claims(
    claims: &Map<String, Value>,
    oidc: &Settings,
    now: u64,
) -> Result<u64, TokenError> {
    let iss = issuer_claim(claims.get("iss"))?;
    if iss != oidc.issuer {
        return Err(TokenError::Issuer {
            found: iss.to_string(),
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
        .any(|a| oidc.audience.iter().any(|c| c == a))
    {
        return Err(TokenError::Audience(format!("{audiences:?}")));
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
    if let Some(iat) = numeric_date(claims, "iat")? {
        if iat > now + leeway {
            return Err(TokenError::IssuedInFuture { iat, now, leeway });
        }
    }
    Ok(exp)
}
