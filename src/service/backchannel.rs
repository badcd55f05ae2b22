//! The OpenID Connect Back-Channel Logout endpoint (Back-Channel Logout
//! 1.0 §2.5–§2.8): `POST /backchannel-logout` on a listener of its own
//! (`[revocation] backchannel_listen`), so that it can be exposed to the
//! identity provider without exposing `/metrics`.
//!
//! A request is a form (`application/x-www-form-urlencoded`) with exactly
//! one `logout_token`. The token is validated by `oidc::logout` against
//! the issuers the service runs with now (a reload applies to the next
//! request), and a valid logout is handed to a [`LogoutSink`], where the
//! revocation list plugs in. The answers are the spec's: 200 when the
//! logout was carried out, 400 with an OAuth error object otherwise, and
//! `Cache-Control: no-store` on every one; nothing else is served (other
//! methods 405, other paths 404).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use crate::clock::{unix_now, Deadline};
use crate::metrics::{LogoutOutcome, Metrics};
use crate::oidc::error::TokenError;
use crate::oidc::MAX_LOGOUT_TOKEN_BYTES;
use crate::oidc::{route_logout, LogoutError, LogoutRequest, LogoutVerifier};
use crate::service::live::Live;
use crate::text;

pub(super) const PATH: &str = "/backchannel-logout";

/// Larger bodies are refused unread: the form is one token (which needs
/// no percent-encoding: base64url and dots) and its parameter name, with
/// room for a few parameters a provider may add.
const MAX_BODY_BYTES: usize = MAX_LOGOUT_TOKEN_BYTES + 4096;

/// How long the body may take to arrive, and the verification (a key
/// refetch for an unknown `kid`) after it: a peer that trickles its body
/// does not hold a connection longer.
const REQUEST_TIME: Duration = Duration::from_secs(10);

/// What a valid logout does: the revocation list plugs in here.
pub(crate) trait LogoutSink: Send + Sync + 'static {
    /// Carries out `request` (its `jti` seen for the first time). An error
    /// is answered 400 as the spec wants for a failed logout, and the `jti`
    /// is forgotten, so that the provider's retry is carried out rather
    /// than refused as a replay.
    fn logout(
        &self,
        request: LogoutRequest,
    ) -> impl Future<Output = Result<(), LogoutFailed>> + Send;
}

/// Why a valid logout could not be carried out.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LogoutFailed(pub(crate) String);

/// A claim's value for a log line: escaped and clipped (it is the
/// provider's text), `-` when absent.
pub(super) fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "-".into(), |v| text::printable(v, 64))
}

pub(super) struct Backchannel<S> {
    pub(super) live: Arc<Live>,
    /// One for the life of the process: the `jti`s it remembers outlive
    /// config reloads.
    pub(super) verifier: LogoutVerifier,
    pub(super) sink: S,
    pub(super) metrics: Arc<Metrics>,
}

pub(super) fn router<S: LogoutSink>(state: Arc<Backchannel<S>>) -> Router {
    Router::new()
        .route(PATH, post(receive::<S>))
        .with_state(state)
        .layer(axum::middleware::map_response(no_store))
}

pub(super) async fn serve<S: LogoutSink>(
    listener: tokio::net::TcpListener,
    state: Arc<Backchannel<S>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let named = crate::service::http_serve::Listener {
        key: "revocation.backchannel_listen",
        label: "backchannel",
        metrics: state.metrics.clone(),
    };
    crate::service::http_serve::serve(listener, router(state), shutdown, named).await;
}

/// §2.8: every answer, errors included, is `Cache-Control: no-store`.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn receive<S: LogoutSink>(
    State(state): State<Arc<Backchannel<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let token = match tokio::time::timeout(REQUEST_TIME, read_form(&headers, body)).await {
        Ok(Ok(token)) => token,
        Ok(Err(bad)) => return state.bad_request(bad),
        Err(_) => return state.bad_request(BadRequest::Slow),
    };
    state.logout(&token).await
}

/// Why a request carries no logout token to verify.
#[derive(Debug, PartialEq, Eq)]
enum BadRequest {
    ContentType,
    TooLarge,
    Slow,
    NoToken,
    TwoTokens,
    EmptyToken,
}

impl BadRequest {
    fn status(&self) -> StatusCode {
        match self {
            BadRequest::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BadRequest::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn describe(&self) -> String {
        match self {
            BadRequest::ContentType => {
                "the body must be a form: Content-Type application/x-www-form-urlencoded".into()
            }
            BadRequest::TooLarge => {
                format!("the body is larger than {MAX_BODY_BYTES} bytes, or was cut off")
            }
            BadRequest::Slow => format!("the body did not arrive within {REQUEST_TIME:?}"),
            BadRequest::NoToken => "the form has no logout_token parameter".into(),
            BadRequest::TwoTokens => {
                "the form has more than one logout_token parameter (RFC 6749 §3.1)".into()
            }
            BadRequest::EmptyToken => "the logout_token parameter is empty".into(),
        }
    }
}

/// The form's one `logout_token`.
async fn read_form(headers: &HeaderMap, body: Body) -> Result<String, BadRequest> {
    if !is_form(headers.get(header::CONTENT_TYPE)) {
        return Err(BadRequest::ContentType);
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| BadRequest::TooLarge)?;
    logout_token(&bytes)
}

/// Whether the media type is a form's (parameters such as `charset` are
/// allowed; media types are case-insensitive).
fn is_form(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The one `logout_token` of a form body; other parameters are ignored.
fn logout_token(form: &[u8]) -> Result<String, BadRequest> {
    let mut found = None;
    for (name, value) in url::form_urlencoded::parse(form) {
        if name != "logout_token" {
            continue;
        }
        if found.replace(value).is_some() {
            return Err(BadRequest::TwoTokens);
        }
    }
    match found {
        None => Err(BadRequest::NoToken),
        Some(token) if token.is_empty() => Err(BadRequest::EmptyToken),
        Some(token) => Ok(token.into_owned()),
    }
}

impl<S: LogoutSink> Backchannel<S> {
    fn bad_request(&self, bad: BadRequest) -> Response {
        let reason = bad.describe();
        tracing::warn!(result = "refused", %reason, "back-channel logout");
        self.metrics
            .record_backchannel_logout(None, LogoutOutcome::Refused);
        error_answer(bad.status(), "invalid_request", &reason)
    }

    /// Validates `token` against the issuers running now and carries the
    /// logout out.
    async fn logout(self: &Arc<Self>, token: &str) -> Response {
        let callout = self.live.callout();
        let issuer = match route_logout(callout.authorizer().issuers(), token) {
            Ok(issuer) => issuer,
            Err(e) => return self.refused(None, &e),
        };
        let name = issuer.settings.name.as_str();
        let deadline = Deadline::at(tokio::time::Instant::now() + REQUEST_TIME);
        match self
            .verifier
            .verify(issuer, token, unix_now(), &deadline)
            .await
        {
            Ok(request) => self.carry_out_whatever_happens(request).await,
            Err(e) => self.refused(Some(name), &e),
        }
    }

    /// A token that is no valid logout, or a replay of one. A replay is
    /// answered 400 as well, not 200: §2.6 lists the `jti` check among the
    /// validation steps whose failure is a 400 (and issue 27 asks for
    /// it), and nothing is lost by it, since the logout it repeats was
    /// carried out when the first copy came. It is counted and logged
    /// apart (info, not warn): a provider retrying after a lost answer is
    /// no attack.
    fn refused(&self, issuer: Option<&str>, error: &LogoutError) -> Response {
        let reason = text::reason(&error.to_string());
        let description = text::reason(&for_the_peer(error));
        let shown_issuer = issuer.unwrap_or(crate::metrics::UNKNOWN_ISSUER);
        let outcome = if error.is_replay() {
            tracing::info!(result = "replayed", issuer = %shown_issuer, %reason, "back-channel logout");
            LogoutOutcome::Replayed
        } else {
            tracing::warn!(result = "refused", issuer = %shown_issuer, %reason, "back-channel logout");
            LogoutOutcome::Refused
        };
        self.metrics.record_backchannel_logout(issuer, outcome);
        error_answer(StatusCode::BAD_REQUEST, "invalid_request", &description)
    }

    /// Its `jti` is recorded now, so the logout is carried out to the end
    /// on a task of its own: were it dropped halfway with the request (the
    /// provider hanging up, the connection cut off at shutdown), the
    /// revocation would be lost and the provider's retry refused as a
    /// replay.
    async fn carry_out_whatever_happens(self: &Arc<Self>, request: LogoutRequest) -> Response {
        let this = self.clone();
        let task = tokio::spawn({
            let request = request.clone();
            async move { this.carry_out(request).await }
        });
        match task.await {
            Ok(response) => response,
            // A panic is a bug; the logout is taken as failed, so that the
            // provider's retry is carried out (again, to the same effect).
            Err(e) => self.failed(&request, &format!("carrying it out panicked: {e}")),
        }
    }

    async fn carry_out(&self, request: LogoutRequest) -> Response {
        match self.sink.logout(request.clone()).await {
            Ok(()) => {
                self.metrics
                    .record_backchannel_logout(Some(&request.issuer), LogoutOutcome::Accepted);
                StatusCode::OK.into_response()
            }
            Err(e) => self.failed(&request, &e.to_string()),
        }
    }

    /// A valid logout that could not be carried out: its `jti` is
    /// forgotten, so that the provider's retry is acted on.
    fn failed(&self, request: &LogoutRequest, why: &str) -> Response {
        self.verifier.forget(request);
        let reason = text::reason(why);
        tracing::warn!(
            result = "failed",
            issuer = %request.issuer,
            sub = %shown(request.sub.as_deref()),
            sid = %shown(request.sid.as_deref()),
            jti = %text::printable(&request.jti, 64),
            %reason,
            "back-channel logout could not be carried out; the provider may retry it"
        );
        self.metrics
            .record_backchannel_logout(Some(&request.issuer), LogoutOutcome::Failed);
        // §2.8: a failed logout is a 400 too. `server_error` rather than
        // `invalid_request`: the request was good, and the provider may
        // send it again.
        error_answer(
            StatusCode::BAD_REQUEST,
            "server_error",
            &format!("the logout could not be carried out: {reason}"),
        )
    }
}

/// What the peer is told of a refusal: the log's reason, except that a
/// token naming an issuer that is not configured is not answered with the
/// list of those that are (whoever can reach the endpoint can send one).
fn for_the_peer(error: &LogoutError) -> String {
    match error {
        LogoutError::Token(TokenError::UnknownIssuer { found, .. }) => {
            format!("token issuer {found:?} is not a configured issuer")
        }
        other => other.to_string(),
    }
}

/// An OAuth error object (RFC 6749 §5.2), as §2.8 describes. The
/// description never holds the token, only what was wrong with it.
fn error_answer(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::config::Config;
    use crate::dev::DevIssuer;
    use crate::oidc::KeySet;

    /// Fails its first `failures` logouts (a revocation list that cannot
    /// be written), then carries them out; counts them.
    struct Flaky {
        failures: usize,
        calls: AtomicUsize,
    }

    impl LogoutSink for Flaky {
        async fn logout(&self, _: LogoutRequest) -> Result<(), LogoutFailed> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                Err(LogoutFailed("the revocation list is unavailable".into()))
            } else {
                Ok(())
            }
        }
    }

    /// The endpoint's state around `sink`, trusting `dev` (its keys
    /// installed, nothing fetched).
    fn endpoint<S: LogoutSink>(dev: &DevIssuer, sink: S) -> Backchannel<S> {
        let seed = nkeys::KeyPair::new_account().seed().unwrap();
        let text = format!(
            "[callout]\nissuer_seed = \"{seed}\"\naccount = \"APP\"\n\n\
             [oidc]\nissuer = \"{}\"\naudience = \"nats\"\nroles_claim = \"roles\"\n\n\
             [roles.reader]\nsub.allow = [\"a\"]\n",
            dev.issuer()
        );
        let config = Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
        let metrics = Arc::new(Metrics::new());
        let live = Live::new(config, metrics.clone()).unwrap();
        let jwks =
            json!({ "keys": [dev.public_jwk(&dev.current_kid(jsonwebtoken::Algorithm::RS256))] });
        for issuer in live.callout().authorizer().issuers().iter() {
            let set = KeySet::parse(jwks.to_string().as_bytes(), &issuer.settings).unwrap();
            issuer.keys.install(set);
        }
        Backchannel {
            live,
            verifier: LogoutVerifier::new(),
            sink,
            metrics,
        }
    }

    async fn answer(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_logout_that_could_not_be_carried_out_is_a_400_and_its_retry_is_acted_on() {
        let dev = DevIssuer::start(0).await.unwrap();
        let state = Arc::new(endpoint(
            &dev,
            Flaky {
                failures: 1,
                calls: AtomicUsize::new(0),
            },
        ));
        let token = dev.logout_token(Some("user-ana"), Some("s1"), "nats");
        let (status, body) = answer(state.logout(&token).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "server_error", "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("the revocation list is unavailable"),
            "{body}"
        );
        // The provider's retry of the same token is carried out, once.
        assert_eq!(answer(state.logout(&token).await).await.0, StatusCode::OK);
        let (status, body) = answer(state.logout(&token).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("received before"), "{body}");
        assert_eq!(state.sink.calls.load(Ordering::SeqCst), 2);
        let metrics = state.metrics.render();
        for outcome in ["failed", "accepted", "replayed"] {
            assert!(
                metrics.contains(&format!(
                    "backchannel_logouts_total{{issuer=\"default\",outcome=\"{outcome}\"}} 1"
                )),
                "{outcome}:\n{metrics}"
            );
        }
    }

    /// Holds each logout until released, then carries it out.
    #[derive(Default)]
    struct Held {
        started: tokio::sync::Notify,
        release: tokio::sync::Notify,
        finished: tokio::sync::Notify,
    }

    impl LogoutSink for Held {
        async fn logout(&self, _: LogoutRequest) -> Result<(), LogoutFailed> {
            self.started.notify_one();
            self.release.notified().await;
            self.finished.notify_one();
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_logout_is_carried_out_to_the_end_even_when_its_request_is_dropped() {
        let dev = DevIssuer::start(0).await.unwrap();
        let state = Arc::new(endpoint(&dev, Held::default()));
        let token = dev.logout_token(Some("user-ana"), None, "nats");
        let request = tokio::spawn({
            let (state, token) = (state.clone(), token.clone());
            async move { state.logout(&token).await }
        });
        // The jti is recorded and the revocation under way: the provider
        // hangs up (hyper drops the handler's future).
        state.sink.started.notified().await;
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        state.sink.release.notify_one();
        // A bound so that a logout dropped with its request fails the
        // test rather than hanging it.
        tokio::time::timeout(Duration::from_secs(30), state.sink.finished.notified())
            .await
            .expect("the logout was carried out although its request was dropped");
        // Carried out and counted; the jti stays recorded, so a replay is
        // refused as one.
        let metrics = state.metrics.render();
        assert!(
            metrics
                .contains("backchannel_logouts_total{issuer=\"default\",outcome=\"accepted\"} 1"),
            "{metrics}"
        );
        let (status, body) = answer(state.logout(&token).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("received before"), "{body}");
    }

    #[test]
    fn only_a_form_is_read() {
        let ct = |v: &str| HeaderValue::from_str(v).unwrap();
        for good in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded",
            "application/x-www-form-urlencoded; charset=UTF-8",
        ] {
            assert!(is_form(Some(&ct(good))), "{good}");
        }
        for bad in [
            "application/json",
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/x-www-form-urlencoded-not",
        ] {
            assert!(!is_form(Some(&ct(bad))), "{bad}");
        }
        assert!(!is_form(None));
    }

    #[test]
    fn the_form_has_exactly_one_logout_token() {
        assert_eq!(logout_token(b"logout_token=a.b.c").unwrap(), "a.b.c");
        assert_eq!(
            logout_token(b"state=1&logout_token=a.b.c&x=").unwrap(),
            "a.b.c"
        );
        assert_eq!(logout_token(b"logout_token=a%2Eb.c").unwrap(), "a.b.c");
        assert_eq!(logout_token(b""), Err(BadRequest::NoToken));
        assert_eq!(logout_token(b"token=a.b.c"), Err(BadRequest::NoToken));
        assert_eq!(
            logout_token(b"logout_token=a.b.c&logout_token=a.b.c"),
            Err(BadRequest::TwoTokens)
        );
        assert_eq!(logout_token(b"logout_token="), Err(BadRequest::EmptyToken));
    }
}
