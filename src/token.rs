//! Bearer token validation: from the raw connect password to verified claims.
//!
//! Order matters: everything that can be decided without a key (size, shape,
//! header) is decided first; then the key is chosen by `kid` and bound to the
//! algorithm its type allows; then the signature and the registered claims.
//! `jsonwebtoken` verifies the signature and the iss/aud/exp/nbf basics; the
//! checks it leaves out (header `typ`, `crit`, header key parameters, `iat`,
//! strict claim types) are made here.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::config::{parse_algorithm, OidcConfig};
use crate::key_manager::KeyManager;
use crate::keys::VerifyingKey;
use crate::token_cache::TokenCache;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is {len} bytes, more than callout.max_token_bytes ({max})")]
    TooLarge { len: usize, max: usize },
    #[error("token uses the JWS JSON serialization; only compact JWS is accepted")]
    JsonSerialization,
    #[error("token is a JWE (encrypted); only signed compact JWS is accepted")]
    Encrypted,
    #[error("token is not a compact JWS: {0}")]
    Malformed(String),
    #[error("token header: {0}")]
    Header(String),
    #[error("token alg {0:?} is not accepted")]
    Algorithm(String),
    #[error("token typ {0:?} is not accepted (JWT or at+jwt)")]
    Type(String),
    #[error("token header carries {0:?}; keys are only taken from the issuer's JWKS")]
    HeaderKey(&'static str),
    #[error("token header has crit {0:?}; no JWS extensions are supported")]
    Critical(String),
    #[error("token header has cty {0:?}; nested tokens are not accepted")]
    Nested(String),
    #[error("issuer keys are not loaded yet (issuer unreachable?)")]
    NoKeys,
    #[error("token kid {0:?} is not in the issuer's key set")]
    UnknownKid(String),
    #[error("no issuer key allows alg {0:?}")]
    NoKeyForAlg(String),
    #[error("key {kid:?} does not allow alg {alg:?}")]
    KeyAlgMismatch { kid: String, alg: String },
    #[error("token signature does not verify")]
    Signature,
    #[error("token claims are not a JSON object: {0}")]
    Payload(String),
    #[error("token claim {0:?} is missing")]
    MissingClaim(&'static str),
    #[error("token claim {claim:?} must be {expected}")]
    ClaimType {
        claim: &'static str,
        expected: &'static str,
    },
    #[error("token issuer {found:?} is not {expected:?}")]
    Issuer { found: String, expected: String },
    #[error("token issuer {found:?} is none of the configured issuers {known:?}")]
    UnknownIssuer { found: String, known: Vec<String> },
    #[error("token audience {0} does not include any of oidc.audience")]
    Audience(String),
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("token not valid before {nbf} (now {now}, leeway {leeway}s)")]
    NotYetValid { nbf: u64, now: u64, leeway: u64 },
    #[error("token issued in the future at {iat} (now {now}, leeway {leeway}s)")]
    IssuedInFuture { iat: u64, now: u64, leeway: u64 },
}

impl TokenError {
    /// A short stable label, for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::TooLarge { .. } => "token_too_large",
            TokenError::JsonSerialization | TokenError::Encrypted | TokenError::Malformed(_) => {
                "token_malformed"
            }
            TokenError::Header(_) => "token_header",
            TokenError::Algorithm(_) => "token_alg",
            TokenError::Type(_) => "token_typ",
            TokenError::HeaderKey(_) => "token_header_key",
            TokenError::Critical(_) => "token_crit",
            TokenError::Nested(_) => "token_nested",
            TokenError::NoKeys => "issuer_keys_unavailable",
            TokenError::UnknownKid(_) => "token_unknown_kid",
            TokenError::NoKeyForAlg(_) | TokenError::KeyAlgMismatch { .. } => "token_key_alg",
            TokenError::Signature => "token_signature",
            TokenError::Payload(_) | TokenError::MissingClaim(_) | TokenError::ClaimType { .. } => {
                "token_claims"
            }
            TokenError::Issuer { .. } | TokenError::UnknownIssuer { .. } => "token_issuer",
            TokenError::Audience(_) => "token_audience",
            TokenError::Expired { .. } => "token_expired",
            TokenError::NotYetValid { .. } | TokenError::IssuedInFuture { .. } => {
                "token_not_yet_valid"
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub claims: Map<String, Value>,
    pub exp: u64,
}

pub struct TokenVerifier {
    oidc: Arc<OidcConfig>,
    keys: Arc<KeyManager>,
    max_bytes: usize,
    verified: TokenCache,
}

struct ParsedHeader {
    alg: Algorithm,
    kid: Option<String>,
}

impl TokenVerifier {
    pub fn new(oidc: Arc<OidcConfig>, keys: Arc<KeyManager>, max_bytes: usize) -> Self {
        TokenVerifier {
            verified: TokenCache::new(oidc.token_cache_bytes),
            oidc,
            keys,
            max_bytes,
        }
    }

    pub async fn verify(&self, token: &str, now: u64) -> Result<Arc<VerifiedToken>, TokenError> {
        if token.len() > self.max_bytes {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: self.max_bytes,
            });
        }
        let cache_key = self.verified.enabled().then(|| TokenCache::key(token));
        if let Some(key) = &cache_key {
            let generation = self.keys.current().generation;
            if let Some(hit) = self.verified.get(key, generation, now) {
                self.keys.metrics().token_cache_hits.inc();
                return Ok(hit);
            }
        }
        let header = self.precheck(token)?;
        let (candidates, generation) = self.candidates(&header).await?;
        let mut last = TokenError::Signature;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &key.validation)
            {
                Ok(data) => {
                    let exp = check_claims(&data.claims, &self.oidc, now)?;
                    let verified = Arc::new(VerifiedToken {
                        claims: data.claims,
                        exp,
                    });
                    if let Some(key) = cache_key {
                        self.verified
                            .insert(key, token.len(), generation, verified.clone());
                    }
                    return Ok(verified);
                }
                Err(e) => {
                    last = self.explain(e.kind(), token, now);
                    if last != TokenError::Signature {
                        // The signature verified with this key: the claims
                        // are what is wrong, and no other key changes that.
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// Shape and header checks that need no key.
    fn precheck(&self, token: &str) -> Result<ParsedHeader, TokenError> {
        let header = check_shape(token)?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) => a,
            Some(_) => return Err(TokenError::Header("alg is not a string".into())),
            None => return Err(TokenError::Header("alg is missing".into())),
        };
        let alg = parse_algorithm(alg)
            .ok()
            .filter(|a| self.oidc.algorithms.contains(a))
            .ok_or_else(|| TokenError::Algorithm(clip(alg)))?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(TokenError::Header("kid is not a string".into())),
        };
        Ok(ParsedHeader { alg, kid })
    }

    /// Keys that may verify this token: by `kid` if it names one (refetching
    /// once if the kid is unknown), else every key that allows the algorithm;
    /// and the generation of the key set they come from.
    async fn candidates(
        &self,
        header: &ParsedHeader,
    ) -> Result<(Vec<Arc<VerifyingKey>>, u64), TokenError> {
        let mut set = self.keys.current();
        // A kid names its key; when the issuer publishes keys without kids,
        // those keys are the only other candidates.
        let pick = |set: &crate::keys::KeySet| match &header.kid {
            Some(kid) => {
                let named = set.with_kid(kid);
                if named.is_empty() {
                    set.without_kid_allowing(header.alg)
                } else {
                    named
                }
            }
            None => set.allowing(header.alg),
        };
        let mut found = pick(&set);
        if found.is_empty() {
            set = self.keys.refetch_for_unknown_key().await;
            found = pick(&set);
        }
        if found.is_empty() {
            return Err(match (&header.kid, set.is_empty()) {
                (_, true) => TokenError::NoKeys,
                (Some(kid), false) => TokenError::UnknownKid(clip(kid)),
                (None, false) => TokenError::NoKeyForAlg(format!("{:?}", header.alg)),
            });
        }
        let allowed: Vec<_> = found
            .iter()
            .filter(|k| k.allows(header.alg))
            .cloned()
            .collect();
        if allowed.is_empty() {
            return Err(TokenError::KeyAlgMismatch {
                kid: clip(header.kid.as_deref().unwrap_or_default()),
                alg: format!("{:?}", header.alg),
            });
        }
        Ok((allowed, set.generation))
    }

    /// Turns a `jsonwebtoken` error into a precise reason. Claim errors come
    /// after the signature verified, so reading the payload to name the exact
    /// problem is safe.
    fn explain(&self, kind: &ErrorKind, token: &str, now: u64) -> TokenError {
        match kind {
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm("for this key".into()),
            ErrorKind::ExpiredSignature
            | ErrorKind::ImmatureSignature
            | ErrorKind::InvalidIssuer
            | ErrorKind::InvalidAudience
            | ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_) => match payload(token) {
                Ok(claims) => match check_claims(&claims, &self.oidc, now) {
                    Err(e) => e,
                    Ok(_) => TokenError::Payload(format!("{kind:?}")),
                },
                Err(e) => e,
            },
            ErrorKind::Json(e) => TokenError::Payload(e.to_string()),
            ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                TokenError::Malformed(format!("{kind:?}"))
            }
            other => TokenError::Malformed(format!("{other:?}")),
        }
    }
}

/// The checks that depend on no issuer: compact JWS form and a header that
/// names no key source, extension, nesting or unexpected type. Returns the
/// header.
pub fn check_shape(token: &str) -> Result<Map<String, Value>, TokenError> {
    if token.trim_start().starts_with('{') {
        return Err(TokenError::JsonSerialization);
    }
    let dots = token.bytes().filter(|b| *b == b'.').count();
    if dots == 4 {
        return Err(TokenError::Encrypted);
    }
    if dots != 2 {
        return Err(TokenError::Malformed(format!(
            "{} parts, expected 3",
            dots + 1
        )));
    }
    if let Some(bad) = token
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    {
        return Err(TokenError::Malformed(format!(
            "character {:?} is not base64url",
            bad as char
        )));
    }
    let (h, _) = token.split_once('.').expect("two dots");
    if token.ends_with('.') {
        return Err(TokenError::Malformed("empty signature".into()));
    }
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| TokenError::Header("not base64url".into()))?;
    let header: Map<String, Value> = serde_json::from_slice(&header_bytes)
        .map_err(|e| TokenError::Header(format!("not a JSON object: {e}")))?;
    for param in ["jku", "x5u", "jwk", "x5c"] {
        if header.contains_key(param) {
            return Err(TokenError::HeaderKey(param));
        }
    }
    if header.contains_key("enc") || header.contains_key("zip") {
        return Err(TokenError::Encrypted);
    }
    if let Some(crit) = header.get("crit") {
        return Err(TokenError::Critical(clip(&crit.to_string())));
    }
    if let Some(cty) = header.get("cty") {
        return Err(TokenError::Nested(clip(&cty.to_string())));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) => {
            let t = t.to_ascii_lowercase();
            let t = t.strip_prefix("application/").unwrap_or(&t);
            if t != "jwt" && t != "at+jwt" {
                return Err(TokenError::Type(clip(t)));
            }
        }
        Some(other) => return Err(TokenError::Type(clip(&other.to_string()))),
    }
    Ok(header)
}

/// The `iss` a token claims, read without verifying anything: it only
/// chooses which issuer's keys and rules will then verify the token. The
/// rest of the payload is skipped, not built.
pub fn claimed_issuer(token: &str) -> Result<String, TokenError> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<Value>,
    }
    let mut parts = token.split('.');
    let (Some(_), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three parts".into()));
    };
    let claims: Iss = payload(token)?;
    issuer_claim(claims.iss.as_ref()).map(str::to_string)
}

/// The `iss` claim, typed strictly.
fn issuer_claim(iss: Option<&Value>) -> Result<&str, TokenError> {
    match iss {
        Some(Value::String(iss)) => Ok(iss),
        Some(_) => Err(TokenError::ClaimType {
            claim: "iss",
            expected: "a string",
        }),
        None => Err(TokenError::MissingClaim("iss")),
    }
}

/// Header values are read before the signature is checked: keep what an
/// attacker can put into the log short.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        s.chars().take(MAX).collect::<String>() + "..."
    }
}

fn payload<T: serde::de::DeserializeOwned>(token: &str) -> Result<T, TokenError> {
    let p = token.split('.').nth(1).unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| TokenError::Malformed("claims are not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Payload(e.to_string()))
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

/// The registered-claim checks, applied strictly: JSON types as RFC 7519
/// defines them, exact issuer, required audience, exp not extended by leeway
/// (the NATS user JWT expires with the token), nbf and iat with leeway.
pub fn check_claims(
    claims: &Map<String, Value>,
    oidc: &OidcConfig,
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
