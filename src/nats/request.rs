//! The authorization request nats-server publishes on `$SYS.REQ.USER.AUTH`
//! (ADR-26): optionally xkey-sealed, a JWT signed by the server's own nkey.
//!
//! Fields are optional where the server may omit them; only what the decision
//! needs is required.

use serde::Deserialize;

use std::borrow::Cow;
use std::time::Duration;

use crate::nats::jwt::{self as nats_jwt, Issued, NatsJwtError, Unverified};
use crate::nats::xkey::{OurXkey, ServerXkey};

pub(crate) const CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
pub(crate) const XKEY_HEADER: &str = "Nats-Server-Xkey";
const REQUEST_AUDIENCE: &str = "nats-authorization-request";
const REQUEST_TYPE: &str = "authorization_request";
/// nats-server gives a request `exp` = now + auth timeout, in whole
/// seconds: one second covers that rounding, one more a small difference
/// between two hosts' clocks (keep them in step with NTP).
const CLOCK_SLACK_SECS: i64 = 2;
/// No request is worked on longer than this, whatever its claims say.
const MAX_BUDGET_SECS: i64 = 60;

#[derive(Debug, Deserialize)]
pub struct RequestClaims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub aud: String,
    #[serde(default)]
    pub exp: i64,
    #[serde(default)]
    pub iat: i64,
    pub nats: RequestBody,
}

impl RequestClaims {
    /// Who the answer goes to.
    pub fn addressee(&self) -> Addressee {
        Addressee {
            user_nkey: self.nats.user_nkey.clone(),
            server_id: self.nats.server_id.id.clone(),
        }
    }
}

impl Issued for RequestClaims {
    fn issuer(&self) -> &str {
        &self.iss
    }
}

#[derive(Debug, Deserialize, Default)]
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
    /// `nats`, `websocket` or `mqtt`.
    #[serde(default, rename = "type")]
    pub client_type: Option<String>,
    /// The challenge nats-server gave this client; present when the client
    /// signed one (nkey authentication).
    #[serde(default)]
    pub nonce: Option<String>,
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
    /// A public user nkey the client claims, with `sig`, its signature of
    /// the nonce. nats-server passes both on unverified.
    #[serde(default)]
    pub nkey: Option<String>,
    #[serde(default)]
    pub sig: Option<String>,
    /// The user JWT the client presented (in operator mode the sentinel's,
    /// which nats-server checked together with `nkey` and `sig`).
    #[serde(default)]
    pub jwt: Option<String>,
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
            .field("nkey", &self.nkey)
            .field("jwt", &self.jwt.as_ref().map(|_| "<present>"))
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
    pub server_xkey: Option<ServerXkey>,
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
    #[error("request has no expiry (nats-server always sets exp)")]
    NoExpiry,
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
    /// Set when the request was sealed and opened, so the refusal is sealed too.
    pub server_xkey: Option<ServerXkey>,
}

impl<E: Into<RequestError>> From<E> for Box<DecodeFailure> {
    fn from(e: E) -> Self {
        Box::new(DecodeFailure {
            error: e.into(),
            addressee: None,
            server_xkey: None,
        })
    }
}

/// Opens (if sealed) and verifies one authorization request message.
///
/// `our_issuer` is the public key of the callout issuer: nats-server puts it in
/// the request's `sub` in config mode.
pub fn decode(
    payload: &[u8],
    xkey_header: Option<&str>,
    our_xkey: Option<&OurXkey>,
    our_issuer: &str,
    now: i64,
) -> Result<AuthRequest, Box<DecodeFailure>> {
    open(payload, xkey_header, our_xkey)?.verify(our_issuer, now)
}

/// A request message opened (when sealed) and read, its signature not yet
/// checked: enough to tell how long it is worth working on.
pub struct Opened<'a> {
    jwt: Cow<'a, [u8]>,
    unverified: Unverified<RequestClaims>,
    server_xkey: Option<ServerXkey>,
    xkey_header: Option<&'a str>,
}

/// Opens (if sealed) and reads one authorization request message.
pub fn open<'a>(
    payload: &'a [u8],
    xkey_header: Option<&'a str>,
    our_xkey: Option<&OurXkey>,
) -> Result<Opened<'a>, Box<DecodeFailure>> {
    let (jwt, server_xkey) = match xkey_header {
        None => (Cow::Borrowed(payload), None),
        Some(header) => {
            let ours = our_xkey.ok_or(RequestError::SealedWithoutXkey)?;
            let theirs = ours
                .server(header)
                .map_err(|_| RequestError::BadServerXkey(crate::text::clip(header)))?;
            let opened = ours
                .open(&theirs, payload)
                .map_err(|_| RequestError::Unseal)?;
            (Cow::Owned(opened), Some(theirs))
        }
    };
    match nats_jwt::decode_unverified(&jwt) {
        Ok(unverified) => Ok(Opened {
            jwt,
            unverified,
            server_xkey,
            xkey_header,
        }),
        Err(e) => Err(Box::new(DecodeFailure {
            error: e.into(),
            addressee: None,
            server_xkey,
        })),
    }
}

impl Opened<'_> {
    /// Who the answer would go to, as the request says, before its
    /// signature is checked (for tools that stand in for a responder; the
    /// service answers only verified requests).
    pub fn addressee_unverified(&self) -> Addressee {
        self.unverified.claims.addressee()
    }

    /// The server's xkey when the request came sealed.
    pub fn server_xkey(&self) -> Option<&ServerXkey> {
        self.server_xkey.as_ref()
    }

    /// How long after its arrival the request is worth working on.
    /// nats-server refuses the client when its auth timeout ends; `exp` and
    /// `iat` are whole seconds of its clock, so `exp - iat` is that timeout
    /// (one more second covers the rounding of `iat`), counted from the
    /// arrival without comparing two hosts' clocks. By the wall clock, with
    /// the same slack for clock steps as the expiry check, a request that
    /// is already stale on arrival (replayed, or held up on the way) has
    /// none left.
    pub fn budget(&self, now: i64) -> Duration {
        let c = &self.unverified.claims;
        let by_wall = c.exp.saturating_add(CLOCK_SLACK_SECS).saturating_sub(now);
        let by_timeout = if c.iat > 0 && c.exp >= c.iat {
            c.exp - c.iat + 1
        } else {
            by_wall
        };
        Duration::from_secs(by_timeout.min(by_wall).clamp(0, MAX_BUDGET_SECS) as u64)
    }

    /// Checks the server's signature and the request's claims.
    pub fn verify(self, our_issuer: &str, now: i64) -> Result<AuthRequest, Box<DecodeFailure>> {
        let Opened {
            jwt,
            unverified,
            server_xkey,
            xkey_header,
        } = self;
        let claims = match unverified.verify(&jwt, 'N') {
            Ok(claims) => claims,
            Err(e) => {
                return Err(Box::new(DecodeFailure {
                    error: e.into(),
                    addressee: None,
                    server_xkey,
                }))
            }
        };
        let addressee = claims.addressee();
        match check(claims, xkey_header, our_issuer, now) {
            Ok(claims) => Ok(AuthRequest {
                claims,
                server_xkey,
            }),
            Err(error) => Err(Box::new(DecodeFailure {
                error,
                addressee: Some(addressee),
                server_xkey,
            })),
        }
    }
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
    if claims.exp <= 0 {
        return Err(RequestError::NoExpiry);
    }
    if claims.exp.saturating_add(CLOCK_SLACK_SECS) < now {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Signs request claims with `signer` the way nats-server does.
    fn request(signer: &nkeys::KeyPair, claims: Value) -> Vec<u8> {
        let signer = crate::nats::signing_key::SigningKey::of(signer).unwrap();
        nats_jwt::sign(&serde_json::to_vec(&claims).unwrap(), &signer).into_bytes()
    }

    fn claims(server: &nkeys::KeyPair, issuer: &str, exp: i64) -> Value {
        json!({
            "iss": server.public_key(), "sub": issuer, "aud": "nats-authorization-request", "exp": exp,
            "nats": {
                "type": "authorization_request", "version": 2,
                "server_id": {"name": "n1", "host": "127.0.0.1", "id": server.public_key()},
                "user_nkey": nkeys::KeyPair::new_user().public_key(),
                "client_info": {"host": "127.0.0.1", "id": 5},
                "connect_opts": {"pass": "tok", "protocol": 1}
            }
        })
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn the_budget_is_the_servers_auth_timeout_by_its_own_clock() {
        let server = nkeys::KeyPair::new_server();
        let issuer = nkeys::KeyPair::new_account().public_key();
        let budget = |iat: Option<i64>, exp: i64, now: i64| {
            let mut c = claims(&server, &issuer, exp);
            if let Some(iat) = iat {
                c["iat"] = json!(iat);
            }
            let bytes = request(&server, c);
            open(&bytes, None, None).unwrap().budget(now).as_secs()
        };
        // As nats-server signs them: exp = iat + auth timeout (2 s).
        assert_eq!(budget(Some(NOW), NOW + 2, NOW), 3);
        assert_eq!(budget(Some(NOW), NOW + 2, NOW - 600), 3, "a clock behind");
        assert_eq!(budget(Some(NOW), NOW + 2, NOW + 1), 3, "a clock ahead");
        assert_eq!(budget(Some(NOW), NOW + 2, NOW + 3), 1);
        assert_eq!(
            budget(Some(NOW - 120), NOW - 118, NOW),
            0,
            "stale on arrival"
        );
        assert_eq!(budget(None, NOW + 2, NOW), 4, "without iat, the wall clock");
        assert_eq!(budget(None, NOW + 2, NOW + 60), 0);
        assert_eq!(budget(Some(NOW), i64::MAX, NOW), 60, "capped");
    }

    #[test]
    fn a_server_signed_request_decodes() {
        let server = nkeys::KeyPair::new_server();
        let issuer = nkeys::KeyPair::new_account().public_key();
        let r = decode(
            &request(&server, claims(&server, &issuer, NOW + 2)),
            None,
            None,
            &issuer,
            NOW,
        )
        .unwrap();
        assert_eq!(r.claims.nats.connect_opts.bearer_token(), Some("tok"));
        assert!(r.server_xkey.is_none());
    }

    #[test]
    fn requests_without_expiry_or_with_extreme_expiry_are_handled() {
        let server = nkeys::KeyPair::new_server();
        let issuer = nkeys::KeyPair::new_account().public_key();
        let err = decode(
            &request(&server, claims(&server, &issuer, 0)),
            None,
            None,
            &issuer,
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err.error, RequestError::NoExpiry));
        assert!(
            err.addressee.is_some(),
            "a verified request gets a reasoned refusal"
        );
        let err = decode(
            &request(&server, claims(&server, &issuer, i64::MIN)),
            None,
            None,
            &issuer,
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err.error, RequestError::NoExpiry));
        assert!(decode(
            &request(&server, claims(&server, &issuer, i64::MAX)),
            None,
            None,
            &issuer,
            NOW
        )
        .is_ok());
        let err = decode(
            &request(&server, claims(&server, &issuer, NOW - 60)),
            None,
            None,
            &issuer,
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err.error, RequestError::Expired { .. }));
    }

    #[test]
    fn requests_not_signed_by_the_named_server_are_refused_without_answer() {
        let server = nkeys::KeyPair::new_server();
        let other = nkeys::KeyPair::new_server();
        let issuer = nkeys::KeyPair::new_account().public_key();
        // Signed by another server than the one in iss: signature fails.
        let mut c = claims(&server, &issuer, NOW + 2);
        c["iss"] = json!(server.public_key());
        let err = decode(&request(&other, c), None, None, &issuer, NOW).unwrap_err();
        assert!(matches!(
            err.error,
            RequestError::Jwt(NatsJwtError::Signature)
        ));
        assert!(
            err.addressee.is_none(),
            "an unverified request is not answered with a signed refusal"
        );
        // Signed by an account key instead of a server key.
        let account = nkeys::KeyPair::new_account();
        let mut c = claims(&server, &issuer, NOW + 2);
        c["iss"] = json!(account.public_key());
        let err = decode(&request(&account, c), None, None, &issuer, NOW).unwrap_err();
        assert!(matches!(
            err.error,
            RequestError::Jwt(NatsJwtError::Issuer(_))
        ));
        // Validly signed by one server but claiming to be another.
        let mut c = claims(&server, &issuer, NOW + 2);
        c["nats"]["server_id"]["id"] = json!(other.public_key());
        let err = decode(&request(&server, c), None, None, &issuer, NOW).unwrap_err();
        assert!(matches!(err.error, RequestError::ServerMismatch { .. }));
    }

    #[test]
    fn audience_type_user_key_and_issuer_are_checked() {
        let server = nkeys::KeyPair::new_server();
        let issuer = nkeys::KeyPair::new_account().public_key();
        type Change = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Change)> = vec![
            ("audience", Box::new(|c| c["aud"] = json!("something-else"))),
            (
                "type",
                Box::new(|c| c["nats"]["type"] = json!("authorization_response")),
            ),
            (
                "user nkey",
                Box::new(|c| {
                    c["nats"]["user_nkey"] = json!(nkeys::KeyPair::new_account().public_key())
                }),
            ),
            (
                "issuer",
                Box::new(|c| c["sub"] = json!(nkeys::KeyPair::new_account().public_key())),
            ),
        ];
        for (name, change) in cases {
            let mut c = claims(&server, &issuer, NOW + 2);
            change(&mut c);
            assert!(
                decode(&request(&server, c), None, None, &issuer, NOW).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn sealed_requests_open_with_our_xkey_only() {
        let server = nkeys::KeyPair::new_server();
        let issuer = nkeys::KeyPair::new_account().public_key();
        let server_x = nkeys::XKey::new();
        let ours = nkeys::XKey::new();
        let ours_public = nkeys::XKey::from_public_key(&ours.public_key()).unwrap();
        let mut c = claims(&server, &issuer, NOW + 2);
        c["nats"]["server_id"]["xkey"] = json!(server_x.public_key());
        let sealed = server_x.seal(&request(&server, c), &ours_public).unwrap();
        let header = server_x.public_key();
        let ours = OurXkey::new(ours).unwrap();
        let r = decode(&sealed, Some(&header), Some(&ours), &issuer, NOW).unwrap();
        assert_eq!(r.server_xkey.unwrap().public_key(), header);
        let err = decode(&sealed, Some(&header), None, &issuer, NOW).unwrap_err();
        assert!(matches!(err.error, RequestError::SealedWithoutXkey));
        let err = decode(
            &sealed,
            Some(&header),
            Some(&OurXkey::new(nkeys::XKey::new()).unwrap()),
            &issuer,
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err.error, RequestError::Unseal));
    }
}
