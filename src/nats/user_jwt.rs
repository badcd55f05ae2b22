//! The NATS user JWT the callout issues: a v2 user claim for the request's
//! user nkey, placed in its account, carrying the mapped permissions and
//! expiring with the bearer token. Also the sentinel, the permission-less
//! bearer user that routes clients to the callout in operator mode.

use serde::Serialize;

use crate::nats::jwt::{self as nats_jwt, WithJti};
use crate::nats::signing_key::SigningKey;

/// One direction of a user JWT's permissions, as nats-server reads it. A
/// direction with neither list is unrestricted: callers must never send one
/// they mean to deny.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Permission {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Permission {
    /// Nothing allowed, everything denied.
    pub fn none() -> Self {
        Permission {
            allow: Vec::new(),
            deny: vec![">".into()],
        }
    }
}

/// NATS `allow_responses`: `ttl` in nanoseconds (Go's time.Duration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ResponsePermission {
    pub max: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

/// The user's own limits; -1 is unlimited. nats-server reads an omitted
/// limit as zero, so all three are always written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UserLimits {
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
}

impl UserLimits {
    /// Each limit as set, -1 (unlimited) where none is.
    pub fn new(subs: Option<i64>, data: Option<i64>, payload: Option<i64>) -> UserLimits {
        UserLimits {
            subs: subs.unwrap_or(-1),
            data: data.unwrap_or(-1),
            payload: payload.unwrap_or(-1),
        }
    }
}

impl ResponsePermission {
    /// At most `max` replies, each within `ttl` (nats-server reads it in
    /// nanoseconds).
    pub fn new(max: i64, ttl: Option<std::time::Duration>) -> ResponsePermission {
        ResponsePermission {
            max,
            ttl: ttl.map(|t| t.as_nanos().min(i64::MAX as u128) as i64),
        }
    }
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits {
            subs: -1,
            data: -1,
            payload: -1,
        }
    }
}

/// Which connections the user JWT admits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_connection_types: Option<Vec<&'static str>>,
    /// Networks (CIDR) the client must connect from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<Vec<TimeRange>>,
    /// The IANA zone of `times`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times_location: Option<String>,
}

/// A daily connect window, "HH:MM:SS".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimeRange {
    pub start: String,
    pub end: String,
}

#[derive(Serialize)]
struct UserClaims<'a> {
    jti: String,
    iat: u64,
    iss: &'a str,
    sub: &'a str,
    name: &'a str,
    /// In server (config) mode the audience names the account the user is
    /// placed in; operator mode places by the signer and ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    nats: UserBody<'a>,
}

#[derive(Serialize)]
struct UserBody<'a> {
    #[serde(rename = "pub")]
    publish: &'a Permission,
    #[serde(rename = "sub")]
    subscribe: &'a Permission,
    #[serde(skip_serializing_if = "Option::is_none")]
    resp: Option<ResponsePermission>,
    #[serde(flatten)]
    limits: UserLimits,
    #[serde(flatten)]
    connection: &'a ConnectionLimits,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    bearer_token: bool,
    /// The account, when one of its signing keys signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer_account: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

impl WithJti for UserClaims<'_> {
    fn set_jti(&mut self, jti: String) {
        self.jti = jti;
    }
}

/// Where the user lands, as the user JWT says it.
pub enum Placement<'a> {
    /// Server (config) mode: by name, in `aud`; the callout issuer signs.
    Named(&'a str),
    /// Operator mode: by the signer, the account's own key or one of its
    /// signing keys (then `issuer_account` names the account).
    Signed { account: &'a str },
}

pub struct UserGrant<'a> {
    pub user_nkey: &'a str,
    pub name: &'a str,
    pub placement: Placement<'a>,
    pub publish: &'a Permission,
    pub subscribe: &'a Permission,
    pub resp: Option<ResponsePermission>,
    pub limits: UserLimits,
    pub connection: &'a ConnectionLimits,
    pub expires: u64,
}

/// Builds the user JWT and signs it with `signer`.
pub fn issue(grant: &UserGrant<'_>, signer: &SigningKey, now: u64) -> String {
    let mut claims = user_claims(grant, signer.public_key(), now);
    nats_jwt::encode(&mut claims, signer)
}

/// The claims `issue` would sign with `signer_key`, as JSON (no `jti`).
pub(crate) fn claims(grant: &UserGrant<'_>, signer_key: &str, now: u64) -> serde_json::Value {
    let mut value =
        serde_json::to_value(user_claims(grant, signer_key, now)).expect("claims serialize");
    if let Some(map) = value.as_object_mut() {
        map.remove("jti");
    }
    value
}

fn user_claims<'a>(grant: &'a UserGrant<'a>, signer_key: &'a str, now: u64) -> UserClaims<'a> {
    let (aud, issuer_account) = match grant.placement {
        Placement::Named(account) => (Some(account), None),
        Placement::Signed { account } => (None, (account != signer_key).then_some(account)),
    };
    UserClaims {
        jti: String::new(),
        iat: now,
        iss: signer_key,
        sub: grant.user_nkey,
        name: grant.name,
        aud,
        exp: Some(grant.expires),
        nats: UserBody {
            publish: grant.publish,
            subscribe: grant.subscribe,
            resp: grant.resp,
            limits: grant.limits,
            connection: grant.connection,
            bearer_token: false,
            issuer_account,
            kind: "user",
            version: 2,
        },
    }
}

/// The sentinel's user JWT for `user_public` in `account`, signed by the
/// account's key or one of its signing keys: a bearer user (no nonce to
/// sign) that may neither publish nor subscribe. Clients present it only
/// so that nats-server sends their connect to the callout, whose answer
/// replaces it.
pub fn sentinel(user_public: &str, account: &str, signer: &SigningKey, now: u64) -> String {
    let signer_key = signer.public_key();
    let none = Permission::none();
    let anywhere = ConnectionLimits::default();
    let mut claims = UserClaims {
        jti: String::new(),
        iat: now,
        iss: signer_key,
        sub: user_public,
        name: "sentinel",
        aud: None,
        exp: None,
        nats: UserBody {
            publish: &none,
            subscribe: &none,
            resp: None,
            limits: UserLimits::default(),
            connection: &anywhere,
            bearer_token: true,
            issuer_account: (account != signer_key).then_some(account),
            kind: "user",
            version: 2,
        },
    };
    nats_jwt::encode(&mut claims, signer)
}
