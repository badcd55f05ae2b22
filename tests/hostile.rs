//! Hostile input beyond bad tokens, through the running service: a forged
//! authorization request published straight onto the callout subject (the
//! other forgeries are decided in-process in `decisions.rs`), an expired
//! one, responses too large for nats-server, identities taken from
//! unverified email addresses, and token text in the service's log, in
//! nats-server's log and in `explain`. Each case is refused with a precise
//! reason in the log, and the service keeps admitting good tokens right
//! after.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

const CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

use nats_oidc_callout_test_support::server_sim::sign_request as request_jwt;

/// A well-formed request from `server` carrying `token`, addressed to the
/// stack's callout issuer.
fn request_claims(server: &nkeys::KeyPair, stack: &Stack, token: &str) -> Value {
    json!({
        "iss": server.public_key(),
        "sub": stack.keys.issuer.public_key(),
        "aud": "nats-authorization-request",
        "iat": now(),
        "exp": now() + 2,
        "nats": {
            "type": "authorization_request",
            "version": 2,
            "server_id": {"name": "forger", "host": "127.0.0.1", "id": server.public_key()},
            "user_nkey": nkeys::KeyPair::new_user().public_key(),
            "client_info": {"host": "127.0.0.1", "id": 99, "kind": "Client", "type": "nats"},
            "connect_opts": {"user": "x", "pass": token, "protocol": 1}
        }
    })
}

/// Plays nats-server: in callout mode nats-server refuses any client's
/// publish on the callout subject (see
/// `clients_cannot_publish_onto_the_callout_subject`), so forged requests are
/// sent through a plain server the service is attached to.
async fn forger(stack: &Stack) -> async_nats::Client {
    callout_user(&stack.url()).await
}

/// Publishes a request onto the callout subject and returns the answer body.
async fn ask(client: &async_nats::Client, request: String) -> Vec<u8> {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(CALLOUT_SUBJECT, request.into()),
    )
    .await
    .expect("the service answers within 5 s")
    .expect("the service answers");
    reply.payload.to_vec()
}

/// The claims of an authorization response (not verified: the tests only
/// need to see what it grants).
fn response_claims(body: &[u8]) -> Value {
    let text = std::str::from_utf8(body).expect("a response is a JWT");
    let payload = text.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// An answer grants nothing: empty, or a response with an error and no user
/// JWT.
fn assert_grants_nothing(body: &[u8], case: &str) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let claims = response_claims(body);
    assert!(
        claims["nats"].get("jwt").is_none(),
        "{case}: the answer carries a user JWT: {claims}"
    );
    let error = claims["nats"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: the answer has no error: {claims}"));
    Some(error.to_string())
}

/// After a forged request, a genuine one with a good token still gets a
/// user JWT.
async fn assert_still_answers_good_requests(stack: &Stack, client: &async_nats::Client) {
    let server = nkeys::KeyPair::new_server();
    let good = stack.token("ana", &["admin"]);
    let body = ask(
        client,
        request_jwt(&server, &request_claims(&server, stack, &good)),
    )
    .await;
    assert!(
        response_claims(&body)["nats"]["jwt"].is_string(),
        "a good request is answered with a user JWT right after"
    );
}

async fn assert_still_admits_good_tokens(stack: &Stack) {
    let good = stack.token("ana", &["admin"]);
    connect(&stack.url(), &good)
        .await
        .expect("a good token is accepted right after");
}

macro_rules! forged {
    ($name:ident, $reason:literal, $make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let stack = Stack::start_direct(ServiceOptions::default()).await;
            let client = forger(&stack).await;
            let token = stack.token("mallory", &["admin"]);
            let make: fn(&Stack, &str) -> String = $make;
            let body = ask(&client, make(&stack, &token)).await;
            if let Some(error) = assert_grants_nothing(&body, stringify!($name)) {
                assert!(error.contains($reason), "answer error {error:?}");
            }
            wait_for_log(&stack.service.log, $reason, Duration::from_secs(5)).await;
            assert!(stack.service.log_text().contains("code=\"bad_request\""));
            assert!(
                !stack.service.log_text().contains(&token),
                "the token is never logged"
            );
            assert_still_answers_good_requests(&stack, &client).await;
        }
    };
}

forged!(
    request_signed_by_an_account_key_is_refused,
    "not a valid public nkey of the expected kind",
    |stack, token| {
        let account = nkeys::KeyPair::new_account();
        request_jwt(&account, &request_claims(&account, stack, token))
    }
);

/// A request whose time is up (nats-server has refused its client already)
/// is dropped before any work: no signature check, no key fetch for its
/// token's unknown kid, no answer; counted as `result="dropped"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_expired_request_is_dropped_without_work() {
    let stack = Stack::start_direct(ServiceOptions {
        http_port: Some(0),
        ..Default::default()
    })
    .await;
    let port = stack.service.http_port();
    let client = forger(&stack).await;
    let fetches = stack.issuer.jwks_requests();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"never-published"}"#);
    let body = json!({"iss": stack.issuer.issuer(), "aud": AUDIENCE, "exp": now() + 300});
    let token = format!("{header}.{}.AAAA", URL_SAFE_NO_PAD.encode(body.to_string()));
    let server = nkeys::KeyPair::new_server();
    let mut claims = request_claims(&server, &stack, &token);
    claims["iat"] = json!(now() - 120);
    claims["exp"] = json!(now() - 118);
    let answered = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(CALLOUT_SUBJECT, request_jwt(&server, &claims).into()),
    )
    .await;
    assert!(answered.is_err(), "a dropped request is not answered");
    wait_for_log(
        &stack.service.log,
        "result=\"dropped\" code=\"request_expired\"",
        Duration::from_secs(5),
    )
    .await;
    assert!(stack
        .service
        .log_text()
        .contains("stage=\"before checking the request\""));
    assert_eq!(stack.issuer.jwks_requests(), fetches, "no key fetch");
    let (_, metrics) = http_get(port, "/metrics").await;
    assert!(
        metrics.contains(
            "nats_oidc_callout_authorizations_total{result=\"dropped\",reason=\"request_expired\"} 1"
        ),
        "{metrics}"
    );
    assert_still_answers_good_requests(&stack, &client).await;
}

/// In callout mode, nats-server refuses even the callout's own account a
/// publish onto the callout subject: requests can only come from servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_publish_onto_the_callout_subject() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let auth = callout_user(&stack.url()).await;
    let server = nkeys::KeyPair::new_server();
    let token = stack.token("mallory", &["admin"]);
    let asked = tokio::time::timeout(
        Duration::from_secs(3),
        auth.request(
            CALLOUT_SUBJECT,
            request_jwt(&server, &request_claims(&server, &stack, &token)).into(),
        ),
    )
    .await;
    assert!(
        !matches!(asked, Ok(Ok(_))),
        "a client's request on the callout subject was answered"
    );
    wait_for_log(
        &stack.nats.log,
        "Publish Violation - Subject \"$SYS.REQ.USER.AUTH\"",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(count_in_log(&stack.service.log, "result=\"allowed\""), 0);
    assert_still_admits_good_tokens(&stack).await;
}

/// A role table so large that the user JWT cannot fit in one NATS message
/// (max_payload, 1 MiB by default): refused with the reason, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_larger_than_max_payload_is_a_reasoned_refusal() {
    let subjects: Vec<String> = (0..20_000)
        .map(|i| format!("\"tenants.t{i:05}.rooms.general.messages.>\""))
        .collect();
    let roles = format!(
        "{}\n[roles.everywhere]\nsub.allow = [{}]\n",
        default_roles(),
        subjects.join(", ")
    );
    let stack = Stack::start(ServiceOptions {
        roles,
        ..Default::default()
    })
    .await;
    let huge = stack.token("hugo", &["everywhere"]);
    assert_refused(&stack.url(), &huge, "response too large").await;
    wait_for_log(
        &stack.service.log,
        "code=\"response_too_large\"",
        Duration::from_secs(5),
    )
    .await;
    assert!(stack.service.log_text().contains("max_payload of 1048576"));
    assert_still_admits_good_tokens(&stack).await;
}

fn email_token(stack: &Stack, verified: Option<Value>) -> String {
    let kid = stack.issuer.current_kid(jsonwebtoken::Algorithm::RS256);
    let mut claims = stack.issuer.claims("ana", AUDIENCE, &["admin"], 300);
    claims["email"] = json!("ana@example.com");
    match verified {
        Some(v) => claims["email_verified"] = v,
        None => {
            claims.as_object_mut().unwrap().remove("email_verified");
        }
    }
    stack.issuer.sign(&kid, &claims)
}

async fn email_stack(policy: Option<&str>) -> Stack {
    Stack::start(ServiceOptions {
        user_claim: "email".into(),
        extra_oidc: policy
            .map(|p| format!("email_verified = \"{p}\""))
            .unwrap_or_default(),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_verified_if_present_admits_providers_that_omit_it() {
    let stack = email_stack(Some("if_present")).await;
    connect(&stack.url(), &email_token(&stack, None))
        .await
        .expect("no email_verified claim: admitted");
    assert_refused(
        &stack.url(),
        &email_token(&stack, Some(json!(false))),
        "email_verified false",
    )
    .await;
}

/// A seed anyone on the host can read lets them sign users into the
/// account: reported when the service starts, without the seed itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_readable_seed_file_is_reported_at_startup() {
    let exposed = Stack::start(ServiceOptions {
        seed_mode: 0o644,
        ..Default::default()
    })
    .await;
    let log = exposed.service.log_text();
    assert!(
        log.contains("secret file exposed: callout.issuer_seed_file:")
            && log.contains("issuer.nk is readable by every user on this host (mode 0644)"),
        "{log}"
    );
    assert!(!log.contains(&exposed.keys.issuer.seed().unwrap()));

    let private = Stack::start(ServiceOptions::default()).await;
    assert!(!private.service.log_text().contains("secret file exposed"));
}

/// Text from a token reaches the log and `explain` escaped and clipped: a
/// newline in a user name cannot forge a log line, a terminal escape
/// cannot repaint `explain`'s verdict, and a long value cannot flood either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_text_is_escaped_in_the_log_and_in_explain() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let forger = "ana\nresult=\"allowed\" user=root roles=[\"admin\"]";
    connect(&stack.url(), &stack.token(forger, &["reader"]))
        .await
        .expect("an odd but valid name is admitted");
    let painter = format!("eve\u{1b}[1A\u{1b}[2Kverdict:  ALLOWED{}", "x".repeat(5000));
    assert_refused(&stack.url(), &stack.token(&painter, &["guest"]), "unmapped").await;
    wait_for_log(&stack.service.log, "user=eve", Duration::from_secs(5)).await;
    let log = stack.service.log_text();
    assert!(log.contains("user=ana\\nresult="), "{log}");
    assert!(
        !log.lines().any(|l| l.trim_start().starts_with("result=")),
        "a forged line: {log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw escape in the log");
    assert!(log.contains("user=eve\\u{1b}[1A"), "{log}");
    assert!(
        log.lines().all(|l| l.len() < 4000),
        "a 5,000 character value reached the log whole"
    );

    let config = stack.service.config.clone();
    let token = stack.token(&painter, &["guest"]);
    let out = tokio::task::spawn_blocking(move || explain_stdin(&config, &token))
        .await
        .unwrap();
    let text = output_text(&out);
    assert!(
        !text.contains('\u{1b}'),
        "a raw escape in explain: {text:?}"
    );
    assert!(text.contains("verdict:  REFUSED"), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("verdict:  ALLOWED")),
        "{text}"
    );
}

/// Credentials in the NATS URL never reach the log, not even at debug
/// level, where async-nats would print every server address it dials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_nats_url_stay_out_of_debug_logs() {
    let stack = Stack::start(ServiceOptions {
        nats: Some("url = \"nats://auth:authpw@{addr}\"".into()),
        rust_log: Some("debug".into()),
        ..Default::default()
    })
    .await;
    connect(&stack.url(), &stack.token("ana", &["reader"]))
        .await
        .expect("the service logged in with the URL's credentials");
    let log = stack.service.log_text();
    assert!(log.contains("DEBUG"), "debug logging is on");
    assert!(!log.contains("authpw"), "{log}");
}

/// A refusal's reason reaches nats-server's log as written: nats-server
/// formats it with Go's printf, so a `%` from a token would be a verb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_sign_from_a_token_is_shown_as_is_in_the_servers_log() {
    let stack = Stack::start(ServiceOptions::default()).await;
    assert_refused(&stack.url(), &stack.token("ana", &["r-%d-%s"]), "unmapped").await;
    wait_for_log(&stack.nats.log, "r-%d-%s", Duration::from_secs(5)).await;
    assert!(
        !stack.nats.log_text().contains("MISSING"),
        "{}",
        stack.nats.log_text()
    );
}

/// `explain` escapes the subjects it shows, which may hold token values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_escapes_subjects_filled_from_the_token() {
    let stack = Stack::start(ServiceOptions {
        roles: "[roles.own]\npub.allow = [\"users.{{name}}.>\"]\n".into(),
        ..Default::default()
    })
    .await;
    let config = stack.service.config.clone();
    let token = stack.token("ana\u{202e}\u{200b}evil", &["own"]);
    let out = tokio::task::spawn_blocking(move || explain_stdin(&config, &token))
        .await
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains('\u{202e}') && !text.contains('\u{200b}'),
        "{text:?}"
    );
    assert!(text.contains("users.ana\\u{202e}\\u{200b}evil.>"), "{text}");
}
