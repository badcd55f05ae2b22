//! One authorization request message, bytes in → bytes out:
//! open (xkey) and verify the request → authorize → user JWT → signed
//! response → sealed back → size check → one log line.
//!
//! Every failure becomes a refusal: a response carrying the reason when the
//! request can be answered, an empty body when it cannot (nats-server refuses
//! the client at once instead of waiting for its timeout).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::authorize::{Admission, Authorizer};
use crate::clock::{unix_now, Deadline, Interrupted};
use crate::metrics::Outcome;
use crate::nats::request::{self, Addressee, AuthRequest, DecodeFailure, RequestError};
use crate::nats::response::{self, Answer};
use crate::nats::signing_key::SigningKey;
use crate::nats::user_jwt::{self, Placement, ResponsePermission, UserGrant, UserLimits};
use crate::nats::xkey::{OurXkey, ServerXkey};
use crate::refusal::{Refusal, RefusalCode};
use crate::text;

/// The keys the callout answers with.
#[derive(Clone)]
pub struct Keys {
    /// Signs the responses: the callout account's key, or in operator mode
    /// one of its signing keys. In server mode it also signs the user JWTs,
    /// and its public key is nats-server's `auth_callout.issuer`.
    pub issuer: Arc<SigningKey>,
    /// The callout account's public key: requests are addressed to it.
    pub auth_account: String,
    /// Opens sealed requests and seals the answers (`auth_callout.xkey`,
    /// or in operator mode the callout account's `authorization.xkey`).
    pub xkey: Option<Arc<OurXkey>>,
    pub mode: Mode,
}

/// How nats-server runs: with accounts in its config file, or with an
/// operator, accounts as JWTs and a resolver.
#[derive(Clone)]
pub enum Mode {
    /// Users are placed by account name, in user JWTs the issuer signs.
    Server,
    /// Users are placed by the account that signs their user JWT; the
    /// accounts users may land in, by name.
    Operator {
        accounts: BTreeMap<String, TargetAccount>,
    },
}

/// An account users may be placed in (operator mode).
#[derive(Clone)]
pub struct TargetAccount {
    /// Its identity key (`A...`).
    pub public_key: String,
    /// Its own key or one of its signing keys: signs its users' JWTs.
    pub signer: Arc<SigningKey>,
}

impl TargetAccount {
    /// Whether the account's identity key signs (not a signing key).
    pub fn signs_with_identity_key(&self) -> bool {
        self.signer.public_key() == self.public_key
    }
}

pub struct Callout {
    authorizer: Authorizer,
    keys: Keys,
}

/// A connection nats-server asked about, by the names its monitoring and
/// `KICK` know it by, and whom its token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The id of the nats-server it connected to.
    pub server: String,
    /// Its client id on that server.
    pub cid: Option<u64>,
    pub token: Option<Arc<crate::oidc::cache::VerifiedToken>>,
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
        /// The `[[bindings]]` that gave it roles.
        bindings: Vec<String>,
        /// The connection this admits, as a revocation finds it.
        session: Box<Session>,
    },
    Refused {
        code: RefusalCode,
        reason: String,
    },
    /// Not answered: nats-server stopped waiting before it was decided.
    Dropped {
        reason: String,
    },
}

impl Verdict {
    /// What the metrics count.
    pub fn outcome(&self) -> Outcome {
        match self {
            Verdict::Allowed { .. } => Outcome::Allowed,
            Verdict::Refused { code, .. } => Outcome::Refused(*code),
            Verdict::Dropped { .. } => Outcome::Dropped(RefusalCode::RequestExpired),
        }
    }
}

/// How a request reached this process: when (its deadline counts from
/// then), and the signal that ends every wait at shutdown.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub at: tokio::time::Instant,
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Arrival {
    /// Arrived just now, with no shutdown to watch.
    pub fn now() -> Self {
        Arrival {
            at: tokio::time::Instant::now(),
            stop: None,
        }
    }
}

pub struct Decision {
    /// The message body to publish on the request's reply subject (none
    /// when the request was dropped).
    pub body: Vec<u8>,
    pub verdict: Verdict,
    /// nats-server's xkey setting and this callout's disagree, as this
    /// request shows.
    pub xkey: Option<XkeyMismatch>,
}

/// nats-server's `auth_callout.xkey` (in operator mode the callout
/// account's xkey) and `callout.xkey_seed` disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XkeyMismatch {
    /// A sealed request, and no `callout.xkey_seed`: every client refused.
    SealedWithoutXkey,
    /// A sealed request `callout.xkey_seed` cannot open: every client
    /// refused.
    SealedToAnotherKey,
    /// An unsealed request although `callout.xkey_seed` is set: answered,
    /// but the tokens crossed NATS in clear. A nats-server in FIPS mode
    /// never seals, whatever its config says.
    UnsealedWithXkey,
}

impl XkeyMismatch {
    pub const ALL: [XkeyMismatch; 3] = [
        XkeyMismatch::SealedWithoutXkey,
        XkeyMismatch::SealedToAnotherKey,
        XkeyMismatch::UnsealedWithXkey,
    ];

    /// The `kind` label of `xkey_mismatches_total`, and the code `/readyz`
    /// shows.
    pub fn as_str(self) -> &'static str {
        match self {
            XkeyMismatch::SealedWithoutXkey => "sealed_without_xkey",
            XkeyMismatch::SealedToAnotherKey => "wrong_xkey",
            XkeyMismatch::UnsealedWithXkey => "unsealed_with_xkey",
        }
    }

    /// Whether every client this server sends is refused.
    pub fn refuses_everyone(self) -> bool {
        !matches!(self, XkeyMismatch::UnsealedWithXkey)
    }

    /// What is wrong and how to fix it, in words.
    pub fn explain(self, mode: &Mode) -> String {
        let server_key = match mode {
            Mode::Server => "auth_callout.xkey in nats-server's config",
            Mode::Operator { .. } => "the callout account's xkey (nsc edit authcallout --curve)",
        };
        match self {
            XkeyMismatch::SealedWithoutXkey => format!(
                "nats-server seals its authorization requests ({server_key} is set) but callout.xkey_seed is not configured: \
                 every client is refused, and nats-server logs \"no reason supplied\" (a request that cannot be opened \
                 cannot be answered with a reason: the user key it must name is inside). Fix: set callout.xkey_seed_file \
                 to the curve seed (SX...) whose public key is {server_key} (`nats-oidc-callout pubkey <file>` prints it), \
                 or remove the xkey from nats-server"
            ),
            XkeyMismatch::SealedToAnotherKey => format!(
                "nats-server seals its authorization requests to an xkey that callout.xkey_seed does not open: every \
                 client is refused, and nats-server logs \"no reason supplied\". Fix: make {server_key} the public key \
                 of callout.xkey_seed (`nats-oidc-callout pubkey <seed file>` prints it)"
            ),
            XkeyMismatch::UnsealedWithXkey => format!(
                "callout.xkey_seed is set but nats-server sends its authorization requests unsealed: they are answered, \
                 but the bearer tokens in them cross NATS in clear. Fix: set {server_key} to the public key of \
                 callout.xkey_seed; a nats-server in FIPS mode never seals (there, remove callout.xkey_seed to silence this)"
            ),
        }
    }
}

impl Callout {
    pub fn new(authorizer: Authorizer, keys: Keys) -> Self {
        Callout { authorizer, keys }
    }

    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// How nats-server runs, as this callout was configured.
    pub fn mode(&self) -> &Mode {
        &self.keys.mode
    }

    /// Decides one authorization request message and logs the decision.
    /// `max_response_bytes` is the server's max_payload: an allowing response
    /// larger than that could not be delivered, so it becomes a refusal that
    /// says why instead of a silent timeout. Work stops, and nothing is
    /// answered, once the request's deadline (counted from `arrival`) has
    /// passed.
    pub async fn decide(
        &self,
        payload: &[u8],
        xkey_header: Option<&str>,
        max_response_bytes: usize,
        arrival: Arrival,
    ) -> Decision {
        let mut decision = self
            .decide_request(payload, xkey_header, max_response_bytes, arrival)
            .await;
        if decision.xkey.is_none() && xkey_header.is_none() && self.keys.xkey.is_some() {
            decision.xkey = Some(XkeyMismatch::UnsealedWithXkey);
        }
        decision
    }

    async fn decide_request(
        &self,
        payload: &[u8],
        xkey_header: Option<&str>,
        max_response_bytes: usize,
        arrival: Arrival,
    ) -> Decision {
        let started = Instant::now();
        let now = unix_now();
        let opened = match request::open(payload, xkey_header, self.keys.xkey.as_deref()) {
            Ok(o) => o,
            Err(failure) => return self.unusable(*failure, started, now),
        };
        let mut deadline = Deadline::at(arrival.at + opened.budget(now as i64));
        if let Some(stop) = arrival.stop {
            deadline = deadline.or_stop(stop);
        }
        if let Err(i) = deadline.check() {
            return dropped(Refusal::from(i), "before checking the request", started);
        }
        let request = match opened.verify(&self.keys.auth_account, now as i64) {
            Ok(r) => r,
            Err(failure) => return self.unusable(*failure, started, now),
        };
        let to = request.claims.addressee();
        let decided = self
            .authorizer
            .authorize(&request.claims.nats, now, &deadline)
            .await;
        // What took this long is answered to nobody: the server has given up.
        let decided = match decided {
            Err(r) if r.code == RefusalCode::RequestExpired => {
                return dropped(r, "while deciding", started)
            }
            _ if deadline.check() == Err(Interrupted::Expired) => {
                return dropped(Interrupted::Expired.into(), "before answering", started)
            }
            other => other,
        };
        let outcome = match decided {
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
                    bindings: admission.bindings,
                    session: Box::new(Session {
                        server: request.claims.nats.server_id.id.clone(),
                        cid: request.claims.nats.client_info.id,
                        token: admission.token,
                    }),
                },
                xkey: None,
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
                xkey: None,
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
            reason = %text::reason(&reason),
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
        let xkey = match failure.error {
            RequestError::SealedWithoutXkey => Some(XkeyMismatch::SealedWithoutXkey),
            RequestError::Unseal => Some(XkeyMismatch::SealedToAnotherKey),
            _ => None,
        };
        Decision {
            body,
            verdict: Verdict::Refused {
                code: RefusalCode::BadRequest,
                reason,
            },
            xkey,
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
        let (grant, signer) = self.user_grant(admission, &request.claims.nats.user_nkey)?;
        let user_jwt = user_jwt::issue(&grant, signer, now);
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

    /// What the user JWT for `admission` says, and the key that signs it.
    fn user_grant<'a>(
        &'a self,
        admission: &'a Admission,
        user_nkey: &'a str,
    ) -> Result<(UserGrant<'a>, &'a SigningKey), Refusal> {
        let (placement, signer) = match &self.keys.mode {
            Mode::Server => (Placement::Named(&admission.account), &self.keys.issuer),
            Mode::Operator { accounts } => {
                let target = accounts.get(&admission.account).ok_or_else(|| {
                    Refusal::new(
                        RefusalCode::UnknownAccount,
                        format!(
                            "account {:?} is not in [callout.accounts]",
                            admission.account
                        ),
                    )
                    .of(&admission.user)
                })?;
                let account = &target.public_key;
                (Placement::Signed { account }, &target.signer)
            }
        };
        let grant = UserGrant {
            user_nkey,
            name: &admission.user,
            placement,
            publish: &admission.publish,
            subscribe: &admission.subscribe,
            resp: admission
                .resp
                .map(|r| ResponsePermission::new(r.max, r.ttl)),
            limits: UserLimits::new(
                admission.limits.subs,
                admission.limits.data,
                admission.limits.payload,
            ),
            connection: &admission.jwt_rules,
            expires: admission.expires,
        };
        Ok((grant, signer))
    }

    /// The claims of the user JWT `admission` would get (for a connection
    /// whose user nkey is `user_nkey`), as JSON: what `explain` shows.
    pub fn user_claims(
        &self,
        admission: &Admission,
        user_nkey: &str,
        now: u64,
    ) -> Result<serde_json::Value, Refusal> {
        let (grant, signer) = self.user_grant(admission, user_nkey)?;
        Ok(user_jwt::claims(&grant, signer.public_key(), now))
    }

    /// The signed response, sealed when the request came sealed.
    fn respond(
        &self,
        to: &Addressee,
        server_xkey: &Option<ServerXkey>,
        answer: Answer<'_>,
        now: u64,
    ) -> Vec<u8> {
        let seal = self.keys.xkey.as_deref().zip(server_xkey.as_ref());
        let signer = response::Signer {
            key: &self.keys.issuer,
            account: &self.keys.auth_account,
        };
        response::build(to, answer, &signer, seal, now)
    }
}

/// A request worked on past its deadline: no answer, one log line.
fn dropped(why: Refusal, stage: &str, started: Instant) -> Decision {
    tracing::warn!(
        result = "dropped",
        code = why.code.as_str(),
        reason = %text::reason(&why.reason),
        stage,
        latency_us = started.elapsed().as_micros() as u64,
        "authorization"
    );
    Decision {
        body: Vec::new(),
        verdict: Verdict::Dropped { reason: why.reason },
        xkey: None,
    }
}

/// The one log line of a decided request: the audit trail.
fn log(request: &AuthRequest, outcome: Result<&Admission, &Refusal>, started: Instant) {
    // Everything here but the config's own names came in the request or
    // the token: escaped and clipped, it cannot forge or flood a line.
    let client = &request.claims.nats.client_info;
    let client_host = text::name(client.host.as_deref().unwrap_or(""));
    let client_id = client.id.unwrap_or(0);
    let server = text::name(&request.claims.nats.server_id.name);
    let latency_us = started.elapsed().as_micros() as u64;
    match outcome {
        Ok(a) => tracing::info!(
            result = "allowed",
            user = %text::name(&a.user),
            issuer = %a.issuer,
            roles = %text::list(&a.roles),
            scopes = %text::list(&a.scopes),
            account = %a.account,
            bindings = %text::list(&a.bindings),
            expires = a.expires,
            client_host = %client_host,
            client_id,
            server = %server,
            latency_us,
            "authorization"
        ),
        Err(refusal) => tracing::warn!(
            result = "refused",
            user = %text::name(refusal.user.as_deref().unwrap_or("")),
            code = refusal.code.as_str(),
            reason = %text::reason(&refusal.reason),
            client_host = %client_host,
            client_id,
            server = %server,
            latency_us,
            "authorization"
        ),
    }
}
