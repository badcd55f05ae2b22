//! Why a bearer token is refused, precisely.

use crate::clock::Interrupted;
use crate::refusal::RefusalCode;

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
    #[error("token typ {found:?} is not accepted ({expected})")]
    Type {
        found: String,
        expected: &'static str,
    },
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
    #[error("token audience {found} does not include any of {key}")]
    Audience { found: String, key: &'static str },
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("token not valid before {nbf} (now {now}, leeway {leeway}s)")]
    NotYetValid { nbf: u64, now: u64, leeway: u64 },
    #[error("token issued in the future at {iat} (now {now}, leeway {leeway}s)")]
    IssuedInFuture { iat: u64, now: u64, leeway: u64 },
    #[error("stopped before verifying the token: {0}")]
    Interrupted(Interrupted),
    #[error("too many tokens with keys the issuer has not published yet are waiting for its key set; refused at once rather than queued (the client may retry)")]
    KeysBusy,
    #[error("the token names a key the issuer has not published yet, and the issuer's key set did not arrive within {}s of asking for it again; refused now rather than left to nats-server's timeout (the client may retry)", crate::oidc::key_manager::REFETCH_WAIT.as_secs_f64())]
    KeysSlow,
}

impl TokenError {
    /// The refusal code for logs and metrics.
    pub fn code(&self) -> RefusalCode {
        match self {
            TokenError::TooLarge { .. } => RefusalCode::TokenTooLarge,
            TokenError::JsonSerialization | TokenError::Encrypted | TokenError::Malformed(_) => {
                RefusalCode::TokenMalformed
            }
            TokenError::Header(_) => RefusalCode::TokenHeader,
            TokenError::Algorithm(_) => RefusalCode::TokenAlg,
            TokenError::Type { .. } => RefusalCode::TokenTyp,
            TokenError::HeaderKey(_) => RefusalCode::TokenHeaderKey,
            TokenError::Critical(_) => RefusalCode::TokenCrit,
            TokenError::Nested(_) => RefusalCode::TokenNested,
            TokenError::NoKeys => RefusalCode::IssuerKeysUnavailable,
            TokenError::UnknownKid(_) => RefusalCode::TokenUnknownKid,
            TokenError::NoKeyForAlg(_) | TokenError::KeyAlgMismatch { .. } => {
                RefusalCode::TokenKeyAlg
            }
            TokenError::Signature => RefusalCode::TokenSignature,
            TokenError::Payload(_) | TokenError::MissingClaim(_) | TokenError::ClaimType { .. } => {
                RefusalCode::TokenClaims
            }
            TokenError::Issuer { .. } | TokenError::UnknownIssuer { .. } => {
                RefusalCode::TokenIssuer
            }
            TokenError::Audience { .. } => RefusalCode::TokenAudience,
            TokenError::Expired { .. } => RefusalCode::TokenExpired,
            TokenError::NotYetValid { .. } | TokenError::IssuedInFuture { .. } => {
                RefusalCode::TokenNotYetValid
            }
            TokenError::Interrupted(Interrupted::Expired) => RefusalCode::RequestExpired,
            TokenError::Interrupted(Interrupted::Stopping)
            | TokenError::KeysBusy
            | TokenError::KeysSlow => RefusalCode::Unavailable,
        }
    }
}
