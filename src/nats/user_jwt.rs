//! The NATS user JWT the callout issues: a v2 user claim for the request's
//! user nkey, placed in its account, carrying the mapped permissions and
//! expiring with the bearer token. Also the sentinel, the permission-less
//! bearer user that routes clients to the callout in operator mode.

use serde::Serialize;

use crate::nats::jwt::{self as nats_jwt, WithJti};

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
    /// -1 is "no limit"; these are the account's limits that still apply.
    subs: i64,
    data: i64,
    payload: i64,
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
    pub expires: u64,
}

/// Builds the user JWT and signs it with `signer`.
pub fn issue(grant: &UserGrant<'_>, signer: &nkeys::KeyPair, now: u64) -> String {
    let signer_key = signer.public_key();
    let (aud, issuer_account) = match grant.placement {
        Placement::Named(account) => (Some(account), None),
        Placement::Signed { account } => (None, (account != signer_key).then_some(account)),
    };
    let mut claims = UserClaims {
        jti: String::new(),
        iat: now,
        iss: &signer_key,
        sub: grant.user_nkey,
        name: grant.name,
        aud,
        exp: Some(grant.expires),
        nats: UserBody {
            publish: grant.publish,
            subscribe: grant.subscribe,
            subs: -1,
            data: -1,
            payload: -1,
            bearer_token: false,
            issuer_account,
            kind: "user",
            version: 2,
        },
    };
    nats_jwt::encode(&mut claims, signer)
}

/// The sentinel's user JWT for `user_public` in `account`, signed by the
/// account's key or one of its signing keys: a bearer user (no nonce to
/// sign) that may neither publish nor subscribe. Clients present it only
/// so that nats-server sends their connect to the callout, whose answer
/// replaces it.
pub fn sentinel(user_public: &str, account: &str, signer: &nkeys::KeyPair, now: u64) -> String {
    let signer_key = signer.public_key();
    let none = Permission::none();
    let mut claims = UserClaims {
        jti: String::new(),
        iat: now,
        iss: &signer_key,
        sub: user_public,
        name: "sentinel",
        aud: None,
        exp: None,
        nats: UserBody {
            publish: &none,
            subscribe: &none,
            subs: -1,
            data: -1,
            payload: -1,
            bearer_token: true,
            issuer_account: (account != signer_key).then_some(account),
            kind: "user",
            version: 2,
        },
    };
    nats_jwt::encode(&mut claims, signer)
}
