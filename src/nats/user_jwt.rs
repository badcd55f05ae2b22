//! The NATS user JWT the callout issues: a v2 user claim for the request's
//! user nkey, placed in the configured account, carrying the mapped
//! permissions and expiring with the bearer token.

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

#[derive(Serialize)]
struct UserClaims<'a> {
    jti: String,
    iat: u64,
    iss: &'a str,
    sub: &'a str,
    name: &'a str,
    /// In config mode the audience names the account the user is placed in.
    aud: &'a str,
    exp: u64,
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
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

impl WithJti for UserClaims<'_> {
    fn set_jti(&mut self, jti: String) {
        self.jti = jti;
    }
}

pub struct UserGrant<'a> {
    pub user_nkey: &'a str,
    pub name: &'a str,
    pub account: &'a str,
    pub publish: &'a Permission,
    pub subscribe: &'a Permission,
    pub expires: u64,
}

/// Builds and signs the user JWT.
pub fn issue(grant: &UserGrant<'_>, issuer: &nkeys::KeyPair, now: u64) -> String {
    let issuer_key = issuer.public_key();
    let mut claims = UserClaims {
        jti: String::new(),
        iat: now,
        iss: &issuer_key,
        sub: grant.user_nkey,
        name: grant.name,
        aud: grant.account,
        exp: grant.expires,
        nats: UserBody {
            publish: grant.publish,
            subscribe: grant.subscribe,
            subs: -1,
            data: -1,
            payload: -1,
            kind: "user",
            version: 2,
        },
    };
    nats_jwt::encode(&mut claims, issuer)
}
