//! The authorization response: a JWT signed by the callout issuer, addressed
//! to the requesting server and user nkey, carrying either the user JWT or an
//! error; sealed to the server's xkey when the request was sealed.

use serde::Serialize;

use crate::nats::jwt::{self as nats_jwt, WithJti};
use crate::nats::request::Addressee;
use crate::nats::signing_key::SigningKey;
use crate::nats::xkey::{OurXkey, ServerXkey};

#[derive(Serialize)]
struct ResponseClaims<'a> {
    jti: String,
    iat: u64,
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    nats: ResponseBody<'a>,
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    /// The callout account, when one of its signing keys signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer_account: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

impl WithJti for ResponseClaims<'_> {
    fn set_jti(&mut self, jti: String) {
        self.jti = jti;
    }
}

pub enum Answer<'a> {
    Allow { user_jwt: &'a str },
    Deny { error: &'a str },
}

/// nats-server logs the error text; keep it to one readable line.
const MAX_ERROR_CHARS: usize = 512;

/// Who signs a response: the callout account's key, or one of its signing
/// keys (`account` names the account then).
pub struct Signer<'a> {
    pub key: &'a SigningKey,
    pub account: &'a str,
}

/// Signs the response and seals it when the request came sealed.
pub fn build(
    to: &Addressee,
    answer: Answer<'_>,
    signer: &Signer<'_>,
    seal: Option<(&OurXkey, &ServerXkey)>,
    now: u64,
) -> Vec<u8> {
    let issuer_key = signer.key.public_key();
    let error_text;
    let (jwt, error) = match answer {
        Answer::Allow { user_jwt } => (Some(user_jwt), None),
        Answer::Deny { error } => {
            // nats-server logs the text with a Go format call: a `%` from
            // a token would become a verb there.
            error_text = crate::text::one_line(error, MAX_ERROR_CHARS).replace('%', "%%");
            (None, Some(error_text.as_str()))
        }
    };
    let mut claims = ResponseClaims {
        jti: String::new(),
        iat: now,
        iss: issuer_key,
        sub: &to.user_nkey,
        aud: &to.server_id,
        nats: ResponseBody {
            jwt,
            error,
            issuer_account: (signer.account != issuer_key).then_some(signer.account),
            kind: "authorization_response",
            version: 2,
        },
    };
    let token = nats_jwt::encode(&mut claims, signer.key);
    match seal {
        None => token.into_bytes(),
        Some((ours, server)) => ours.seal(server, token.as_bytes()),
    }
}
