//! The authorization request nats-server publishes on `$SYS.REQ.USER.AUTH`
//! (ADR-26): optionally xkey-sealed, a JWT signed by the server's own nkey.
//!
//! Fields are optional where the server may omit them; only what the decision
//! needs is required.

use serde::Deserialize;

use crate::nats_jwt::{self, Issued, NatsJwtError};

pub const CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
pub const XKEY_HEADER: &str = "Nats-Server-Xkey";
const REQUEST_AUDIENCE: &str = "nats-authorization-request";
const REQUEST_TYPE: &str = "authorization_request";
/// nats-server gives a request `exp` = now + auth timeout; a little slack
/// covers clock steps between the two processes on one host.
const CLOCK_SLACK_SECS: i64 = 5;

#[derive(Debug, Deserialize)]
pub struct RequestClaims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub aud: String,
    #[serde(default)]
    pub exp: i64,
    pub nats: RequestBody,
}

impl Issued for RequestClaims {
    fn issuer(&self) -> &str {
        &self.iss
    }
}

#[derive(Debug, Deserialize)]
pub struct RequestBody {
    pub server_id: ServerId,
    pub user_nkey: String,
    #[serde(default)]
    pub client_info: ClientInfo,
    #[serde(default)]
    pub connect_opts: ConnectOpts,
    #[serde(default, rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct ServerId {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub host: String,
    pub id: String,
    #[serde(default)]
    pub xkey: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct ClientInfo {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct ConnectOpts {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub pass: Option<String>,
    #[serde(default)]
    pub auth_token: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl std::fmt::Debug for ConnectOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOpts")
            .field("user", &self.user)
            .field("pass", &self.pass.as_ref().map(|_| "<redacted>"))
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("name", &self.name)
            .finish()
    }
}

impl ConnectOpts {
    /// The bearer token: the connect password, else the connect token
    /// (clients that connect with `--token` send it there).
    pub fn bearer_token(&self) -> Option<&str> {
        [self.pass.as_deref(), self.auth_token.as_deref()]
            .into_iter()
            .flatten()
            .find(|t| !t.is_empty())
    }
}

/// A verified request plus how to reach its sender's xkey, if it was sealed.
#[derive(Debug)]
pub struct AuthRequest {
    pub claims: RequestClaims,
    pub server_xkey: Option<nkeys::XKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request is xkey-sealed but no callout.xkey_seed is configured")]
    SealedWithoutXkey,
    #[error("request header {XKEY_HEADER} {0:?} is not a curve public key")]
    BadServerXkey(String),
    #[error("cannot open the xkey-sealed request (is callout.xkey_seed the key whose public part is auth_callout.xkey?)")]
    Unseal,
    #[error("request JWT: {0}")]
    Jwt(#[from] NatsJwtError),
    #[error("request audience {0:?} is not {REQUEST_AUDIENCE:?}")]
    Audience(String),
    #[error("request type {0:?} is not {REQUEST_TYPE:?}")]
    Type(String),
    #[error("request expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("request is signed by {signer} but claims to come from server {claimed}")]
    ServerMismatch { signer: String, claimed: String },
    #[error("request names {0:?} as the user nkey, which is not a user public key")]
    UserNkey(String),
    #[error("request is addressed to callout issuer {got}, this service signs as {expected}")]
    WrongIssuer { got: String, expected: String },
    #[error("request was sealed with xkey {header} but its server_id.xkey says {claimed}")]
    XkeyMismatch { header: String, claimed: String },
}

/// Who a refusal is addressed to: known once the request's signature has
/// verified, so that even a request refused later gets an answer that names
/// the reason instead of a silent timeout.
#[derive(Debug, Clone)]
pub struct Addressee {
    pub user_nkey: String,
    pub server_id: String,
}

#[derive(Debug)]
pub struct DecodeFailure {
    pub error: RequestError,
    pub addressee: Option<Addressee>,
}

impl<E: Into<RequestError>> From<E> for DecodeFailure {
    fn from(e: E) -> Self {
        DecodeFailure {
            error: e.into(),
            addressee: None,
        }
    }
}

/// Opens (if sealed) and verifies one authorization request message.
///
/// `our_issuer` is the public key of the callout issuer: nats-server puts it in
/// the request's `sub` in config mode.
pub fn decode(
    payload: &[u8],
    xkey_header: Option<&str>,
    our_xkey: Option<&nkeys::XKey>,
    our_issuer: &str,
    now: i64,
) -> Result<AuthRequest, DecodeFailure> {
    let (jwt, server_xkey) = match xkey_header {
        None => (std::borrow::Cow::Borrowed(payload), None),
        Some(header) => {
            let ours = our_xkey.ok_or(RequestError::SealedWithoutXkey)?;
            let theirs = nkeys::XKey::from_public_key(header)
                .map_err(|_| RequestError::BadServerXkey(header.to_string()))?;
            let opened = ours
                .open(payload, &theirs)
                .map_err(|_| RequestError::Unseal)?;
            (std::borrow::Cow::Owned(opened), Some(theirs))
        }
    };
    let claims: RequestClaims = nats_jwt::decode_verified(&jwt, 'N')?;
    let addressee = Addressee {
        user_nkey: claims.nats.user_nkey.clone(),
        server_id: claims.nats.server_id.id.clone(),
    };
    check(claims, xkey_header, our_issuer, now)
        .map(|claims| AuthRequest {
            claims,
            server_xkey,
        })
        .map_err(|error| DecodeFailure {
            error,
            addressee: Some(addressee),
        })
}

fn check(
    claims: RequestClaims,
    xkey_header: Option<&str>,
    our_issuer: &str,
    now: i64,
) -> Result<RequestClaims, RequestError> {
    if claims.aud != REQUEST_AUDIENCE {
        return Err(RequestError::Audience(claims.aud));
    }
    if claims.nats.kind != REQUEST_TYPE {
        return Err(RequestError::Type(claims.nats.kind));
    }
    if claims.exp > 0 && claims.exp + CLOCK_SLACK_SECS < now {
        return Err(RequestError::Expired {
            exp: claims.exp,
            now,
        });
    }
    if claims.iss != claims.nats.server_id.id {
        return Err(RequestError::ServerMismatch {
            signer: claims.iss,
            claimed: claims.nats.server_id.id,
        });
    }
    if !nats_jwt::is_public_key(&claims.nats.user_nkey, 'U') {
        return Err(RequestError::UserNkey(claims.nats.user_nkey));
    }
    if !claims.sub.is_empty() && claims.sub != our_issuer {
        return Err(RequestError::WrongIssuer {
            got: claims.sub,
            expected: our_issuer.to_string(),
        });
    }
    if let (Some(header), Some(claimed)) = (xkey_header, claims.nats.server_id.xkey.as_deref()) {
        if header != claimed {
            return Err(RequestError::XkeyMismatch {
                header: header.to_string(),
                claimed: claimed.to_string(),
            });
        }
    }
    Ok(claims)
}
