//! The decision in-process: a [`Config`] → `config.callout(..)` around its
//! issuers, asked by a simulated nats-server ([`ServerSim`]), with no
//! nats-server and no service process. What the decision tests
//! (`tests/decisions.rs`), the benchmarks and the fuzzers all start from.
//!
//! Each fixture owns a current-thread tokio runtime; its methods block on
//! it, so tests using it are plain `#[test]` functions. The development
//! issuers it starts serve their keys on loopback within that runtime; the
//! issuers' keys are fetched once when the fixture is built (or, offline,
//! installed from a JWKS document).

use std::path::Path;
use std::sync::{Arc, Mutex};

use nats_oidc_callout::config::{Config, ISSUER_SEED_ENV, XKEY_SEED_ENV};
use nats_oidc_callout::dev::DevIssuer;
use nats_oidc_callout::nats::{ConnectOpts, RequestBody};
use nats_oidc_callout::oidc::KeySet;
use nats_oidc_callout::oidc::TokenVerifier;
use nats_oidc_callout::Admission;
use nats_oidc_callout::Metrics;
use nats_oidc_callout::Refusal;
use nats_oidc_callout::{unix_now, Deadline};
use nats_oidc_callout::{Arrival, Callout, Decision, Verdict};
use serde_json::{json, Value};

use crate::config::{ConfigToml, AUDIENCE};
use crate::server_sim::{verified_claims, ServerSim};

/// nats-server's default max_payload: the largest answer it can take.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

/// A callout built from a config, with the issuers it trusts.
pub struct Fixture {
    pub config: Config,
    /// The service's decision, wire edge and all; its `authorizer()` is the
    /// decision alone.
    pub callout: Callout,
    /// A verifier of the first issuer's tokens, beside the decision's own
    /// (with a cache of its own).
    pub verifier: TokenVerifier,
    /// Signs (and seals) the requests, as nats-server would.
    pub server: ServerSim,
    /// The callout's curve key, when the config has one.
    pub callout_xkey: Option<nkeys::XKey>,
    /// The development issuers started for it, in config order.
    pub issuers: Vec<DevIssuer>,
    /// Where the decisions log, and the subscriber that writes there (None:
    /// not captured).
    log: Option<(Log, tracing::Dispatch)>,
    // Last: the issuers' tasks end before their runtime does.
    runtime: tokio::runtime::Runtime,
}

impl Fixture {
    /// One development issuer, and the config `config` makes for its URL
    /// (often [`ConfigToml::dev`] with changes).
    pub fn new(config: impl FnOnce(&str) -> ConfigToml) -> Fixture {
        Fixture::with_issuers(1, |issuers| config(&issuers[0].issuer()))
    }

    /// [`ConfigToml::dev`] as it is: `dev`'s sample roles and a writer.
    pub fn dev() -> Fixture {
        Fixture::new(ConfigToml::dev)
    }

    /// `n` development issuers, and the config `config` makes for them
    /// (which may also change how they serve their keys first).
    pub fn with_issuers(n: usize, config: impl FnOnce(&[DevIssuer]) -> ConfigToml) -> Fixture {
        let runtime = runtime();
        let issuers: Vec<DevIssuer> = (0..n)
            .map(|_| {
                runtime
                    .block_on(DevIssuer::start(0))
                    .expect("a development issuer on loopback")
            })
            .collect();
        let text = config(&issuers).to_string();
        Fixture::build(runtime, issuers, &text, Keys::Fetch)
    }

    /// No issuer runs: `text` is parsed as it is, and the key set of each
    /// `[oidc]` issuer, in order, is installed from `jwks` (no fetch, no
    /// network). The fuzzers' fixture.
    pub fn offline(text: &str, jwks: &[&[u8]]) -> Fixture {
        Fixture::build(runtime(), Vec::new(), text, Keys::Jwks(jwks))
    }

    fn build(
        runtime: tokio::runtime::Runtime,
        issuers: Vec<DevIssuer>,
        text: &str,
        keys: Keys<'_>,
    ) -> Fixture {
        for var in [ISSUER_SEED_ENV, XKEY_SEED_ENV] {
            assert!(
                std::env::var_os(var).is_none(),
                "unset {var}: it would replace the fixture config's seed"
            );
        }
        let config = Config::parse(text, Path::new("fixture.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let metrics = Arc::new(Metrics::new());
        let trusted = {
            let _in_runtime = runtime.enter();
            config.issuers(None, &metrics).expect("issuers")
        };
        for (i, issuer) in trusted.iter().enumerate() {
            match keys {
                Keys::Fetch => {
                    runtime
                        .block_on(issuer.keys.refresh())
                        .unwrap_or_else(|e| panic!("the keys of {}: {e}", issuer.settings.issuer));
                }
                Keys::Jwks(sets) => {
                    let set = KeySet::parse(sets[i], &issuer.settings).expect("the JWKS parses");
                    assert!(
                        set.skipped.is_empty(),
                        "JWKS entries skipped: {:?}",
                        set.skipped
                    );
                    issuer.keys.install(set);
                }
            }
        }
        let first = trusted.iter().next().expect("at least one issuer");
        let verifier = TokenVerifier::new(
            first.settings.clone(),
            first.keys.clone(),
            config.callout.max_token_bytes,
            metrics,
        );
        let callout = config.callout(config.authorizer(trusted, Default::default()));
        let callout_xkey = config
            .callout
            .xkey
            .as_ref()
            .map(|x| nkeys::XKey::from_public_key(&x.public_key()).expect("a curve key"));
        Fixture {
            server: ServerSim::new(&config.callout.auth_account),
            callout_xkey,
            verifier,
            callout,
            config,
            issuers,
            log: Some(Log::default()).map(|l| {
                let dispatch = tracing::Dispatch::new(l.subscriber());
                (l, dispatch)
            }),
            runtime,
        }
    }

    /// The first development issuer.
    pub fn issuer(&self) -> &DevIssuer {
        self.issuers.first().expect("a fixture with an issuer")
    }

    /// An RS256 access token of the first issuer for `user` with `roles`,
    /// valid 300 s.
    pub fn token(&self, user: &str, roles: &[&str]) -> String {
        self.issuer().token(user, AUDIENCE, roles, 300)
    }

    /// Its decisions' log lines are not kept (for loops that decide
    /// millions of times: benchmarks, fuzzers).
    pub fn quiet(mut self) -> Self {
        self.log = None;
        self
    }

    /// Runs `work` on the fixture's runtime, its log lines captured.
    pub fn block_on<F: std::future::Future>(&self, work: F) -> F::Output {
        match &self.log {
            Some((_, dispatch)) => {
                tracing::dispatcher::with_default(dispatch, || self.runtime.block_on(work))
            }
            None => self.runtime.block_on(work),
        }
    }

    /// What the decisions so far logged, as the service's text log shows it.
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .map(|(l, _)| String::from_utf8_lossy(&l.0.lock().unwrap()).into_owned())
            .unwrap_or_default()
    }

    /// `Callout::decide` on a request message as it came off the wire, with
    /// nats-server's default max_payload.
    pub fn decide(&self, payload: &[u8], xkey_header: Option<&str>) -> Decision {
        self.decide_with(payload, xkey_header, MAX_PAYLOAD)
    }

    /// `Callout::decide` with the server's max_payload `max_payload`.
    pub fn decide_with(
        &self,
        payload: &[u8],
        xkey_header: Option<&str>,
        max_payload: usize,
    ) -> Decision {
        self.decide_logged(payload, xkey_header, max_payload).0
    }

    /// The decision and the log lines it wrote (also added to the
    /// fixture's log): tests sharing one fixture see only their own.
    fn decide_logged(
        &self,
        payload: &[u8],
        xkey_header: Option<&str>,
        max_payload: usize,
    ) -> (Decision, String) {
        let work = self
            .callout
            .decide(payload, xkey_header, max_payload, Arrival::now());
        let Some((all, _)) = &self.log else {
            return (self.runtime.block_on(work), String::new());
        };
        let own = Log::default();
        let dispatch = tracing::Dispatch::new(own.subscriber());
        let decision = tracing::dispatcher::with_default(&dispatch, || self.runtime.block_on(work));
        let lines = own.0.lock().unwrap().clone();
        all.0.lock().unwrap().extend_from_slice(&lines);
        (decision, String::from_utf8_lossy(&lines).into_owned())
    }

    /// `Authorizer::authorize` on a verified request's body, now.
    pub fn authorize(&self, request: &RequestBody) -> Result<Admission, Refusal> {
        self.block_on(
            self.callout
                .authorizer()
                .authorize(request, unix_now(), &Deadline::none()),
        )
    }

    /// The admission of a connect with `token` as its password.
    pub fn admission(&self, token: &str) -> Result<Admission, Refusal> {
        self.authorize(&RequestBody {
            connect_opts: ConnectOpts {
                pass: Some(token.to_string()),
                ..ConnectOpts::default()
            },
            ..RequestBody::default()
        })
    }

    /// A client connects with `token` as its password: the request
    /// nats-server sends for it (sealed when the callout has an xkey),
    /// decided, and the answer as nats-server reads it.
    pub fn connect(&self, token: &str) -> Outcome {
        self.connect_opts(json!({"user": "x", "pass": token, "protocol": 1}))
    }

    /// A client connects with these CONNECT options.
    pub fn connect_opts(&self, connect_opts: Value) -> Outcome {
        self.request(self.server.claims(connect_opts, unix_now()))
    }

    /// Request claims (as [`ServerSim::claims`] makes them, then changed)
    /// signed by the server, sent and decided.
    pub fn request(&self, claims: Value) -> Outcome {
        let request = self.server.sign(&claims);
        match &self.callout_xkey {
            Some(ours) => {
                let (sealed, header) = self.server.seal(&request, ours);
                self.answer(&sealed, Some(&header))
            }
            None => self.answer(&request, None),
        }
    }

    /// `payload` decided, and its answer read as nats-server reads it.
    pub fn answer(&self, payload: &[u8], xkey_header: Option<&str>) -> Outcome {
        let (decision, log) = self.decide_logged(payload, xkey_header, MAX_PAYLOAD);
        // As nats-server reads the answer: opened, and signed by the
        // callout's issuer; the user JWT signed by the key it names.
        let response = (!decision.body.is_empty()).then(|| {
            let jwt = self
                .server
                .open_answer(&decision.body, self.callout_xkey.as_ref())?;
            let claims = verified_claims(&jwt)?;
            let issuer = self.config.callout.issuer.public_key();
            if claims["iss"] != json!(issuer) {
                return Err(format!(
                    "signed by {}, not the callout's {issuer}",
                    claims["iss"]
                ));
            }
            Ok(claims)
        });
        let user_jwt = match &response {
            Some(Ok(r)) => r["nats"]["jwt"]
                .as_str()
                .map(|jwt| verified_claims(jwt.as_bytes()).expect("the user JWT verifies"))
                .unwrap_or_default(),
            _ => Value::Null,
        };
        Outcome {
            decision,
            response,
            user_jwt,
            log,
        }
    }
}

/// Where the issuers' keys come from.
enum Keys<'a> {
    /// Fetched from each issuer's JWKS.
    Fetch,
    /// Installed from these documents, one per issuer.
    Jwks(&'a [&'a [u8]]),
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The log lines of a fixture's decisions.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || sink.clone())
            .finish()
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One decided request, as the service decided it and as nats-server reads
/// the answer.
pub struct Outcome {
    pub decision: Decision,
    /// The claims of the response JWT, verified (`None`: nothing was
    /// answered; `Some(Err)`: an answer nats-server would reject).
    pub response: Option<Result<Value, String>>,
    /// The claims of the user JWT the response carries, verified (null:
    /// none).
    pub user_jwt: Value,
    /// The log lines of this decision alone.
    pub log: String,
}

impl Outcome {
    pub fn is_allowed(&self) -> bool {
        matches!(self.decision.verdict, Verdict::Allowed { .. })
    }

    /// The refusal code, if refused.
    pub fn code(&self) -> Option<&'static str> {
        match &self.decision.verdict {
            Verdict::Refused { code, .. } => Some(code.as_str()),
            _ => None,
        }
    }

    /// Asserts a refusal with `code` whose answer carries the reason and no
    /// user JWT (what nats-server shows the client and logs); returns the
    /// reason.
    #[track_caller]
    pub fn refused(&self, code: &str) -> &str {
        let Verdict::Refused { code: got, reason } = &self.decision.verdict else {
            panic!("not refused ({code} expected): {:?}", self.decision.verdict);
        };
        assert_eq!(got.as_str(), code, "refused for another reason: {reason}");
        // A request that cannot be answered (no server key to seal to, a
        // forged server signature) gets no answer; any answer carries the
        // reason and no user JWT.
        if let Some(response) = &self.response {
            let response = response.as_ref().expect("an answer nats-server can read");
            assert!(response["nats"].get("jwt").is_none(), "{response}");
            assert_eq!(response["nats"]["error"], json!(reason), "{response}");
        }
        assert!(self.user_jwt.is_null());
        reason
    }

    /// Asserts an allow and returns the claims of the user JWT it carries.
    #[track_caller]
    pub fn user(&self) -> &Value {
        assert!(
            self.is_allowed(),
            "not allowed: {:?}",
            self.decision.verdict
        );
        let response = self
            .response
            .as_ref()
            .expect("an answer")
            .as_ref()
            .expect("an answer nats-server can read");
        assert!(response["nats"].get("error").is_none(), "{response}");
        assert!(
            self.user_jwt.is_object() && self.user_jwt["nats"].is_object(),
            "no user JWT in {response}"
        );
        &self.user_jwt
    }

    /// Whether the user JWT lets its holder publish on the literal
    /// `subject`, as nats-server reads its permissions.
    pub fn may_publish(&self, subject: &str) -> bool {
        permits(&self.user()["nats"]["pub"], subject)
    }

    /// Whether it lets its holder subscribe to the literal `subject`.
    pub fn may_subscribe(&self, subject: &str) -> bool {
        permits(&self.user()["nats"]["sub"], subject)
    }
}

/// nats-server's rule for one direction: allowed when the allow list is
/// absent or matches, and no deny entry matches.
fn permits(permission: &Value, subject: &str) -> bool {
    let list = |key: &str| -> Vec<String> {
        permission[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (allow, deny) = (list("allow"), list("deny"));
    let allowed = permission.get("allow").is_none_or(Value::is_null)
        || allow.iter().any(|p| matches(p, subject));
    allowed && !deny.iter().any(|p| matches(p, subject))
}

/// Whether the literal `subject` is one `pattern` names (`*` one token,
/// `>` the rest).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut s = subject.split('.');
    for p in pattern.split('.') {
        match (p, s.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    s.next().is_none()
}
