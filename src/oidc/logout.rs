//! OpenID Connect Back-Channel Logout 1.0: a logout token the provider
//! POSTs → who was logged out, or why the token is refused.
//!
//! Validation follows §2.6 in order: the signature by the issuer's keys
//! (the same key manager, key selection and algorithm rules as access
//! tokens: `token::verify_signature`), with `typ` `logout+jwt` when the
//! header has one; `iss`, `aud` (one of `oidc.logout_audience`), `iat` and
//! `exp` as `registered` checks every token, with `iat` and `exp`
//! required; the logout event; no `nonce`; `sub` and/or `sid`; a `jti`,
//! which is accepted once per issuer. Only a token that passes every check
//! records its `jti`, so a forged or broken token cannot make the genuine
//! one look replayed.

use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::clock::Deadline;
use crate::oidc::error::TokenError;
use crate::oidc::registered::{self, Expected};
use crate::oidc::settings::Settings;
use crate::oidc::token::{verify_signature, Kind, Signed};
use crate::oidc::{Issuer, Issuers};
use crate::text::printable;

/// The `events` member that makes a JWT a back-channel logout (§2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Larger logout tokens are refused before anything is parsed. Real ones
/// are well under 2 KiB; this is also the endpoint's body limit.
pub const MAX_LOGOUT_TOKEN_BYTES: usize = 64 * 1024;

/// `jti`s remembered, all issuers together. A provider signs a logout
/// token per session it ends, each valid for minutes (two, as most do);
/// this holds every logout of a very busy provider within that time. When
/// it is full the oldest are forgotten first (LRU, never a refused
/// insert): a forgotten `jti` could be replayed only while its token is
/// still valid, by someone holding the provider's own signed token.
const REPLAY_CAPACITY: u64 = 100_000;

/// A valid logout: whom the provider logged out, and when it said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutRequest {
    /// The `name` of the `[oidc]` block whose issuer signed it.
    pub issuer: String,
    /// Every session of this subject ended (as `sub` in its tokens).
    pub sub: Option<String>,
    /// This login session ended (as `sid` in its tokens).
    pub sid: Option<String>,
    pub jti: String,
    /// When the provider issued the logout: what a revocation can cover
    /// (tokens issued at or before it), so that a late or repeated
    /// delivery never ends a login made after the logout.
    pub iat: u64,
    pub exp: u64,
}

/// Why a logout token is refused. Values from the token are escaped and
/// clipped before they are kept here: a logout token is hostile until its
/// signature verified, and its claims are the sender's even then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutError {
    #[error("logout token is {len} bytes, more than a logout token may be ({max})")]
    TooLarge { len: usize, max: usize },
    /// The checks every token of an issuer gets: shape, header (`typ`,
    /// `crit`, `alg`), key, signature, `iss`, `aud`, `iat`, `exp`.
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("logout token has no events claim: it is not a back-channel logout")]
    NoEvents,
    #[error("logout token's events claim is not a JSON object")]
    EventsNotObject,
    #[error("logout token's events claim has no member {BACKCHANNEL_LOGOUT_EVENT:?}: it announces another event")]
    NotLogoutEvent,
    #[error("logout token's event {BACKCHANNEL_LOGOUT_EVENT:?} is not a JSON object")]
    LogoutEventNotObject,
    #[error("logout token carries a nonce claim, which logout tokens never do (an ID token passed off as one?)")]
    Nonce,
    #[error("logout token has neither sub nor sid: it names no one to log out")]
    NoSubject,
    #[error("logout token has no jti claim")]
    NoJti,
    #[error("logout token claim {0:?} must be a non-empty string")]
    NotAString(&'static str),
    #[error("logout token jti {jti:?} of issuer {issuer:?} was received before: a replay is never acted on")]
    Replayed { issuer: String, jti: String },
}

impl LogoutError {
    pub fn is_replay(&self) -> bool {
        matches!(self, LogoutError::Replayed { .. })
    }
}

/// The issuer that must verify `token`, a logout token: chosen by the
/// `iss` it claims, as access tokens are, with size and shape refused
/// first.
pub fn route_logout<'a, T>(
    issuers: &'a Issuers<T>,
    token: &str,
) -> Result<&'a Issuer<T>, LogoutError> {
    if token.len() > MAX_LOGOUT_TOKEN_BYTES {
        return Err(LogoutError::TooLarge {
            len: token.len(),
            max: MAX_LOGOUT_TOKEN_BYTES,
        });
    }
    Ok(issuers.route_as(token, Kind::Logout)?)
}

/// Validates logout tokens and remembers their `jti`s. One per process:
/// what it remembers outlives config reloads (the issuers are rebuilt,
/// the tokens they signed are not).
pub struct LogoutVerifier {
    /// SHA-256 of (issuer name, `jti`) → how long to keep it.
    seen: moka::sync::Cache<[u8; 32], Duration>,
}

impl Default for LogoutVerifier {
    fn default() -> Self {
        LogoutVerifier::new()
    }
}

/// Keeps each `jti` for the time its entry says.
struct KeepFor;

impl moka::Expiry<[u8; 32], Duration> for KeepFor {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        keep: &Duration,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(*keep)
    }
}

impl LogoutVerifier {
    pub fn new() -> LogoutVerifier {
        LogoutVerifier::with_capacity(REPLAY_CAPACITY)
    }

    fn with_capacity(capacity: u64) -> LogoutVerifier {
        LogoutVerifier {
            seen: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .expire_after(KeepFor)
                .build(),
        }
    }

    /// Validates `token` for `issuer` (see [`route_logout`]) at `now`; the first
    /// time a valid token's `jti` is seen it is remembered and the logout
    /// returned, every later time it is [`LogoutError::Replayed`]. No key
    /// fetch starts once `deadline` has passed.
    pub async fn verify<T>(
        &self,
        issuer: &Issuer<T>,
        token: &str,
        now: u64,
        deadline: &Deadline,
    ) -> Result<LogoutRequest, LogoutError> {
        if token.len() > MAX_LOGOUT_TOKEN_BYTES {
            return Err(LogoutError::TooLarge {
                len: token.len(),
                max: MAX_LOGOUT_TOKEN_BYTES,
            });
        }
        let Signed { claims, .. } = verify_signature(
            &issuer.settings,
            &issuer.keys,
            token,
            Kind::Logout,
            deadline,
        )
        .await?;
        let request = check_claims(&claims, &issuer.settings, now)?;
        self.first_time(&request, now, issuer.settings.leeway)?;
        Ok(request)
    }

    /// Forgets that `request` was received: for a logout that could not be
    /// carried out, so that the provider's retry of the same token is acted
    /// on rather than refused as a replay.
    pub fn forget(&self, request: &LogoutRequest) {
        self.seen
            .invalidate(&seen_key(&request.issuer, &request.jti));
    }

    /// Records the request's `jti`, unless it is recorded already. Check
    /// and record are one step: of two deliveries at once, one is acted on.
    fn first_time(
        &self,
        request: &LogoutRequest,
        now: u64,
        leeway: Duration,
    ) -> Result<(), LogoutError> {
        let entry = self
            .seen
            .entry(seen_key(&request.issuer, &request.jti))
            .or_insert(keep_for(request.exp, now, leeway));
        if entry.is_fresh() {
            Ok(())
        } else {
            Err(LogoutError::Replayed {
                issuer: request.issuer.clone(),
                jti: printable(&request.jti, 64),
            })
        }
    }
}

/// How long a `jti` must be remembered: until its token expires, plus the
/// issuer's leeway for clocks that disagree (a token is never accepted at
/// or past its `exp`, so after that a replay is refused as expired).
fn keep_for(exp: u64, now: u64, leeway: Duration) -> Duration {
    Duration::from_secs(exp.saturating_sub(now)) + leeway
}

/// Per issuer: the same `jti` from two issuers is two logouts. Hashed, so
/// an entry's size does not depend on the sender; the name's length comes
/// first, so no (issuer, jti) pair reads as another.
fn seen_key(issuer: &str, jti: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((issuer.len() as u64).to_be_bytes());
    hash.update(issuer.as_bytes());
    hash.update(jti.as_bytes());
    hash.finalize().into()
}

/// The claims of a logout token whose signature verified (§2.4, §2.6).
fn check_claims(
    claims: &Map<String, Value>,
    oidc: &Settings,
    now: u64,
) -> Result<LogoutRequest, LogoutError> {
    let expected = Expected {
        audience: &oidc.logout_audience,
        audience_key: "oidc.logout_audience",
        iat_required: true,
    };
    let times = registered::check_claims(claims, oidc, &expected, now)?;
    check_events(claims.get("events"))?;
    // A nonce marks an ID token; refusing it keeps an ID token (same
    // issuer, same keys, same audience) from passing for a logout.
    if claims.contains_key("nonce") {
        return Err(LogoutError::Nonce);
    }
    let sub = optional_string(claims, "sub")?;
    let sid = optional_string(claims, "sid")?;
    if sub.is_none() && sid.is_none() {
        return Err(LogoutError::NoSubject);
    }
    let jti = optional_string(claims, "jti")?.ok_or(LogoutError::NoJti)?;
    Ok(LogoutRequest {
        issuer: oidc.name.clone(),
        sub,
        sid,
        jti,
        iat: times.iat.ok_or(TokenError::MissingClaim("iat"))?,
        exp: times.exp,
    })
}

/// `events` must be an object with the logout event, itself an object
/// (usually `{}`).
fn check_events(events: Option<&Value>) -> Result<(), LogoutError> {
    let events = match events {
        None => return Err(LogoutError::NoEvents),
        Some(Value::Object(events)) => events,
        Some(_) => return Err(LogoutError::EventsNotObject),
    };
    match events.get(BACKCHANNEL_LOGOUT_EVENT) {
        None => Err(LogoutError::NotLogoutEvent),
        Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(LogoutError::LogoutEventNotObject),
    }
}

/// A claim that may be absent but, when present, is a non-empty string:
/// an empty `sub` or `sid` would name whoever has none.
fn optional_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, LogoutError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(LogoutError::NotAString(name)),
    }
}

#[cfg(test)]
mod tests;
