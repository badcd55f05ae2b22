//! One authorization request message, bytes in → bytes out:
//! open (xkey) and verify the request → authorize → user JWT → signed
//! response → sealed back → size check → one log line.
//!
//! Every failure becomes a refusal: a response carrying the reason when the
//! request can be answered, an empty body when it cannot (nats-server refuses
//! the client at once instead of waiting for its timeout).

use std::sync::Arc;
use std::time::Instant;

use crate::authorize::{Admission, Authorizer};
use crate::clock::unix_now;
use crate::nats::request::{self, Addressee, AuthRequest, DecodeFailure};
use crate::nats::response::{self, Answer};
use crate::nats::user_jwt::{self, UserGrant};
use crate::refusal::{Refusal, RefusalCode};

/// The keys the callout answers with.
#[derive(Clone)]
pub struct Keys {
    /// Signs user JWTs and responses; its public key is nats-server's
    /// `auth_callout.issuer`.
    pub issuer: Arc<nkeys::KeyPair>,
    /// Opens sealed requests and seals the answers (`auth_callout.xkey`).
    pub xkey: Option<Arc<nkeys::XKey>>,
}

pub struct Callout {
    authorizer: Authorizer,
    keys: Keys,
    issuer_public: String,
}

/// What happened, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        user: String,
        /// The name of the issuer that vouched for the user.
        issuer: String,
        roles: Vec<String>,
        /// The scopes granted to this connection.
        scopes: Vec<String>,
        account: String,
        expires: u64,
    },
    Refused {
        code: RefusalCode,
        reason: String,
    },
}

impl Verdict {
    /// `None` when allowed, else the refusal's code.
    pub fn refusal_code(&self) -> Option<RefusalCode> {
        match self {
            Verdict::Allowed { .. } => None,
            Verdict::Refused { code, .. } => Some(*code),
        }
    }
}

pub struct Decision {
    /// The message body to publish on the request's reply subject.
    pub body: Vec<u8>,
    pub verdict: Verdict,
}

impl Callout {
    pub fn new(authorizer: Authorizer, keys: Keys) -> Self {
        Callout {
            issuer_public: keys.issuer.public_key(),
            authorizer,
            keys,
        }
    }

    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// Decides one authorization request message and logs the decision.
    /// `max_response_bytes` is the server's max_payload: an allowing response
    /// larger than that could not be delivered, so it becomes a refusal that
    /// says why instead of a silent timeout.
    pub async fn decide(
        &self,
        payload: &[u8],
        xkey_header: Option<&str>,
        max_response_bytes: usize,
    ) -> Decision {
        let started = Instant::now();
        let now = unix_now();
        let our_xkey = self.keys.xkey.as_deref();
        let request = match request::decode(
            payload,
            xkey_header,
            our_xkey,
            &self.issuer_public,
            now as i64,
        ) {
            Ok(r) => r,
            Err(failure) => return self.unusable(*failure, started, now),
        };
        let to = request.claims.addressee();
        let outcome = match self.authorizer.authorize(&request.claims.nats, now).await {
            Ok(admission) => self
                .admit(&to, &request, &admission, max_response_bytes, now)
                .map(|body| (body, admission)),
            Err(refusal) => Err(refusal),
        };
        log(&request, outcome.as_ref().map(|(_, a)| a), started);
        match outcome {
            Ok((body, admission)) => Decision {
                body,
                verdict: Verdict::Allowed {
                    user: admission.user,
                    issuer: admission.issuer,
                    roles: admission.roles,
                    scopes: admission.scopes,
                    account: admission.account,
                    expires: admission.expires,
                },
            },
            Err(refusal) => Decision {
                body: self.respond(
                    &to,
                    &request.server_xkey,
                    Answer::Deny {
                        error: &refusal.reason,
                    },
                    now,
                ),
                verdict: Verdict::Refused {
                    code: refusal.code,
                    reason: refusal.reason,
                },
            },
        }
    }

    /// A request that cannot be decided: refused with a reason when it can be
    /// answered at all.
    fn unusable(&self, failure: DecodeFailure, started: Instant, now: u64) -> Decision {
        let reason = format!("bad authorization request: {}", failure.error);
        tracing::warn!(
            result = "refused",
            code = RefusalCode::BadRequest.as_str(),
            reason = %reason,
            latency_us = started.elapsed().as_micros() as u64,
            "authorization"
        );
        let body = match &failure.addressee {
            Some(to) => self.respond(
                to,
                &failure.server_xkey,
                Answer::Deny { error: &reason },
                now,
            ),
            None => Vec::new(),
        };
        Decision {
            body,
            verdict: Verdict::Refused {
                code: RefusalCode::BadRequest,
                reason,
            },
        }
    }

    /// The answer that lets the client in, if it fits in one message.
    fn admit(
        &self,
        to: &Addressee,
        request: &AuthRequest,
        admission: &Admission,
        max_response_bytes: usize,
        now: u64,
    ) -> Result<Vec<u8>, Refusal> {
        let user_jwt = user_jwt::issue(
            &UserGrant {
                user_nkey: &request.claims.nats.user_nkey,
                name: &admission.user,
                account: &admission.account,
                publish: &admission.publish,
                subscribe: &admission.subscribe,
                expires: admission.expires,
            },
            &self.keys.issuer,
            now,
        );
        let body = self.respond(
            to,
            &request.server_xkey,
            Answer::Allow {
                user_jwt: &user_jwt,
            },
            now,
        );
        if body.len() > max_response_bytes {
            return Err(Refusal::new(
                RefusalCode::ResponseTooLarge,
                format!(
                    "the user JWT for these roles makes a {} byte response, more than the server's max_payload of {max_response_bytes}; shorten the roles' subject lists",
                    body.len()
                ),
            )
            .of(&admission.user));
        }
        Ok(body)
    }

    /// The signed response, sealed when the request came sealed.
    fn respond(
        &self,
        to: &Addressee,
        server_xkey: &Option<nkeys::XKey>,
        answer: Answer<'_>,
        now: u64,
    ) -> Vec<u8> {
        let seal = match (self.keys.xkey.as_deref(), server_xkey) {
            (Some(ours), Some(theirs)) => Some((ours, theirs)),
            _ => None,
        };
        match response::build(to, answer, &self.keys.issuer, seal, now) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the authorization response; the client will be refused");
                Vec::new()
            }
        }
    }
}

/// The one log line of a decided request: the audit trail.
fn log(request: &AuthRequest, outcome: Result<&Admission, &Refusal>, started: Instant) {
    let client = &request.claims.nats.client_info;
    let client_host = client.host.as_deref().unwrap_or("");
    let client_id = client.id.unwrap_or(0);
    let server = &request.claims.nats.server_id.name;
    let latency_us = started.elapsed().as_micros() as u64;
    match outcome {
        Ok(a) => tracing::info!(
            result = "allowed",
            user = %a.user,
            issuer = %a.issuer,
            roles = ?a.roles,
            scopes = ?a.scopes,
            account = %a.account,
            expires = a.expires,
            client_host,
            client_id,
            server = %server,
            latency_us,
            "authorization"
        ),
        Err(refusal) => tracing::warn!(
            result = "refused",
            user = refusal.user.as_deref().unwrap_or(""),
            code = refusal.code.as_str(),
            reason = %refusal.reason,
            client_host,
            client_id,
            server = %server,
            latency_us,
            "authorization"
        ),
    }
}
