//! Bearer token validation: from the raw connect password to verified claims.
//!
//! Order matters: everything that can be decided without a key (size, shape,
//! header) is decided first; then the key is chosen by `kid` and bound to the
//! algorithm its type allows; then `jsonwebtoken` verifies the signature, and
//! only then are the claims read and checked, by `registered` alone. The
//! header checks `jsonwebtoken` leaves out (`typ`, `crit`, header key
//! parameters) are made here.
//!
//! The signature step (`verify_signature`) is shared with the back-channel
//! logout tokens of `logout.rs`: the same issuer keys, key selection and
//! algorithm rules, only the header's `typ` tells the two kinds apart.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::clock::Deadline;
use crate::metrics::Metrics;
use crate::oidc::algorithms::parse_algorithm;
use crate::oidc::cache::{TokenCache, VerifiedToken};
use crate::oidc::error::TokenError;
use crate::oidc::jwks::{KeySet, VerifyingKey};
use crate::oidc::key_manager::{KeyManager, RefetchError};
use crate::oidc::registered;
use crate::oidc::settings::Settings;
use crate::text::clip;

pub struct TokenVerifier {
    oidc: Arc<Settings>,
    keys: Arc<KeyManager>,
    max_bytes: usize,
    verified: TokenCache,
    metrics: Arc<Metrics>,
}

struct ParsedHeader {
    alg: Algorithm,
    kid: Option<String>,
}

/// Which kind of JWT of an issuer a token must be. The header's `typ`
/// tells them apart (explicit typing, RFC 8725 §3.11), so that one kind
/// cannot be replayed as the other: an access token is no logout, and a
/// logout token no login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A bearer access token: `typ` absent, `JWT` or `at+jwt` (RFC 9068).
    Access,
    /// An OpenID Connect back-channel logout token: `typ` absent or
    /// `logout+jwt` (Back-Channel Logout 1.0 §2.4).
    Logout,
}

impl Kind {
    /// Whether a header `typ` (lowercase, without `application/`) is this
    /// kind's.
    fn accepts(self, typ: &str) -> bool {
        match self {
            Kind::Access => typ == "jwt" || typ == "at+jwt",
            Kind::Logout => typ == "logout+jwt",
        }
    }

    /// The `typ` values this kind accepts, for messages.
    fn expected(self) -> &'static str {
        match self {
            Kind::Access => "JWT or at+jwt",
            Kind::Logout => "logout+jwt",
        }
    }
}

/// A token whose signature one of its issuer's keys verified: its claims,
/// not yet checked, and the key set generation that verified it.
pub(crate) struct Signed {
    pub(crate) claims: Map<String, Value>,
    pub(crate) generation: u64,
}

impl TokenVerifier {
    /// Takes `token` out of the cache of tokens that verified.
    pub(crate) fn forget_token(&self, token: &str) {
        self.verified.forget_key(&TokenCache::key(token));
    }

    /// Takes the tokens `covered` says yes to out of the cache of tokens
    /// that verified (a revocation).
    pub(crate) fn forget(&self, covered: impl Fn(&VerifiedToken) -> bool + Send + Sync + 'static) {
        self.verified.forget(covered);
    }

    pub fn new(
        oidc: Arc<Settings>,
        keys: Arc<KeyManager>,
        max_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        TokenVerifier {
            verified: TokenCache::new(oidc.token_cache_bytes),
            oidc,
            keys,
            max_bytes,
            metrics,
        }
    }

    /// Verifies `token` at `now`. No signature check or key fetch starts
    /// once `deadline` has passed, and waiting for a key fetch ends there.
    pub async fn verify(
        &self,
        token: &str,
        now: u64,
        deadline: &Deadline,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        // Routing checks the size too; this keeps `verify` safe on its own.
        if token.len() > self.max_bytes {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: self.max_bytes,
            });
        }
        let cache_key = self.verified.enabled().then(|| TokenCache::key(token));
        if let Some(key) = &cache_key {
            if let Some(hit) = self.verified.get(key, self.keys.generation(), now) {
                self.metrics.token_cache_hits.inc();
                return Ok(hit);
            }
        }
        let Signed { claims, generation } =
            verify_signature(&self.oidc, &self.keys, token, Kind::Access, deadline).await?;
        let expected = registered::Expected {
            audience: &self.oidc.audience,
            audience_key: "oidc.audience",
            iat_required: false,
        };
        let exp = registered::check_claims(&claims, &self.oidc, &expected, now)?.exp;
        let verified = Arc::new(VerifiedToken { claims, exp });
        if let Some(key) = cache_key {
            self.verified.insert(key, generation, verified.clone());
        }
        Ok(verified)
    }
}

/// Verifies that one of `keys` signed `token`, a JWS of `kind` from the
/// issuer `oidc`, and returns its claims, unchecked: what each kind
/// requires of them is the caller's. No signature check or key fetch
/// starts once `deadline` has passed.
pub(crate) async fn verify_signature(
    oidc: &Settings,
    keys: &Arc<KeyManager>,
    token: &str,
    kind: Kind,
    deadline: &Deadline,
) -> Result<Signed, TokenError> {
    let header = precheck(oidc, token, kind)?;
    let (candidates, generation) = candidates(keys, &header, deadline).await?;
    let (message, signature) = token.rsplit_once('.').expect("check_shape saw two dots");
    deadline.check().map_err(TokenError::Interrupted)?;
    for key in candidates {
        if signature_verifies(message, signature, &key, header.alg)? {
            // The signature verified with this key: the claims are what
            // decides now, and no other key changes that.
            let claims = payload(token)?;
            return Ok(Signed { claims, generation });
        }
    }
    Err(TokenError::Signature)
}

/// Shape and header checks that need no key.
fn precheck(oidc: &Settings, token: &str, kind: Kind) -> Result<ParsedHeader, TokenError> {
    let header = check_shape(token, kind)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a,
        Some(_) => return Err(TokenError::Header("alg is not a string".into())),
        None => return Err(TokenError::Header("alg is missing".into())),
    };
    let alg = parse_algorithm(alg)
        .ok()
        .filter(|a| oidc.algorithms.contains(a))
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
    keys: &Arc<KeyManager>,
    header: &ParsedHeader,
    deadline: &Deadline,
) -> Result<(Vec<Arc<VerifyingKey>>, u64), TokenError> {
    let mut set = keys.current();
    // A kid names its key; when the issuer publishes keys without kids,
    // those keys are the only other candidates.
    let pick = |set: &KeySet| match &header.kid {
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
        set = keys
            .refetch_for_unknown_key(deadline)
            .await
            .map_err(|e| match e {
                RefetchError::Busy => TokenError::KeysBusy,
                RefetchError::Slow => TokenError::KeysSlow,
                RefetchError::Interrupted(i) => TokenError::Interrupted(i),
            })?;
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

/// Whether `signature` is `key`'s signature of `message` with `alg`; the
/// key has been checked to allow `alg`.
fn signature_verifies(
    message: &str,
    signature: &str,
    key: &VerifyingKey,
    alg: Algorithm,
) -> Result<bool, TokenError> {
    jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.decoding, alg).map_err(|e| {
        match e.kind() {
            ErrorKind::Base64(_) => TokenError::Malformed("the signature is not base64url".into()),
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm("for this key".into()),
            other => TokenError::Malformed(format!("{other:?}")),
        }
    })
}

/// The checks that depend on no issuer: compact JWS form and a header that
/// names no key source, extension, nesting or type other than `kind`'s.
/// Returns the header.
pub(crate) fn check_shape(token: &str, kind: Kind) -> Result<Map<String, Value>, TokenError> {
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
    // Media types are case-insensitive, and `typ` may omit the
    // `application/` prefix (RFC 7515 §4.1.9).
    let wrong_type = |found: String| TokenError::Type {
        found,
        expected: kind.expected(),
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) => {
            let t = t.to_ascii_lowercase();
            let t = t.strip_prefix("application/").unwrap_or(&t);
            if !kind.accepts(t) {
                return Err(wrong_type(clip(t)));
            }
        }
        Some(other) => return Err(wrong_type(clip(&other.to_string()))),
    }
    Ok(header)
}

/// The `iss` a token claims, read without verifying anything: it only
/// chooses which issuer's keys and rules will then verify the token. The
/// rest of the payload is skipped, not built.
pub(crate) fn claimed_issuer(token: &str) -> Result<String, TokenError> {
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
    registered::issuer_claim(claims.iss.as_ref()).map(str::to_string)
}

fn payload<T: serde::de::DeserializeOwned>(token: &str) -> Result<T, TokenError> {
    let p = token.split('.').nth(1).unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| TokenError::Malformed("claims are not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Payload(e.to_string()))
}
