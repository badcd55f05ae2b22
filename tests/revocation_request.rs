//! Revocation by NATS request through a real nats-server: an admin user of
//! the callout's account, who alone may publish to
//! `revocation.request_subject`, revokes as `nats-oidc-callout revoke`
//! does; OIDC users cannot reach the subject; bad requests are answered
//! with an error and revoke nothing.

mod common;

use std::time::Duration;

use async_nats::ConnectOptions;
use common::*;
use serde_json::{json, Value};

const SUBJECT: &str = "nats-oidc-callout.revoke";

/// The admin of the README's nats-server snippet: a user of AUTH that
/// skips the callout, may publish to the request subject only, and hears
/// answers on an inbox prefix of its own (not `_INBOX.>`, where the
/// service's own JetStream answers arrive).
const ADMIN: &str = r#"{ user: revoker, password: revokerpw, permissions: { publish: "nats-oidc-callout.revoke", subscribe: "_INBOX_revoker.>" } }"#;

/// The admin's key in operator mode: a user JWT of AUTH, listed in its
/// `auth_users`, with the same permissions as `ADMIN`.
fn operator_admin() -> &'static nkeys::KeyPair {
    static KEY: std::sync::OnceLock<nkeys::KeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(nkeys::KeyPair::new_user)
}

fn options(operator: bool) -> ServiceOptions {
    ServiceOptions {
        operator,
        jetstream: true,
        revocation: format!("kv_bucket = \"revocations\"\nrequest_subject = \"{SUBJECT}\""),
        auth_users: vec![("revoker".into(), ADMIN.into())],
        operator_auth_users: vec![operator_admin().public_key()],
        ..ServiceOptions::default()
    }
}

async fn admin(stack: &Stack) -> async_nats::Client {
    let options = match &stack.operator {
        None => ConnectOptions::with_user_and_password("revoker".into(), "revokerpw".into()),
        Some(setup) => {
            let creds = setup.auth_user_creds(
                operator_admin(),
                "revoker",
                &[SUBJECT],
                &["_INBOX_revoker.>"],
            );
            ConnectOptions::with_credentials(&creds).expect("the admin's creds")
        }
    };
    options
        .custom_inbox_prefix("_INBOX_revoker")
        .connect(stack.url())
        .await
        .expect("the admin connects")
}

/// The service's answer to `body`.
async fn request(admin: &async_nats::Client, body: impl Into<Vec<u8>>) -> Value {
    let body: Vec<u8> = body.into();
    let answer = tokio::time::timeout(Duration::from_secs(10), admin.request(SUBJECT, body.into()))
        .await
        .expect("answered in time")
        .expect("answered");
    serde_json::from_slice(&answer.payload).expect("the answer is JSON")
}

/// A token of `user` in login session `sid`.
fn session_token(stack: &Stack, user: &str, sid: &str) -> String {
    stack
        .issuer
        .token_with_sid(user, AUDIENCE, &["admin"], 300, sid)
}

/// The keys of the revocation list's bucket.
async fn stored(stack: &Stack) -> Vec<String> {
    use futures::TryStreamExt;
    let js = async_nats::jetstream::new(stack.callout_account_client().await);
    let kv = js.get_key_value("revocations").await.unwrap();
    kv.keys().await.unwrap().try_collect().await.unwrap()
}

/// An admin's request revokes `covered` of issuer default.
async fn admin_revokes(admin: &async_nats::Client, kind: &str, value: &str) {
    let before = unix_now();
    let answer = request(
        admin,
        json!({ "issuer": "default", kind: value }).to_string(),
    )
    .await;
    let revoked = &answer["revoked"];
    assert_eq!(revoked["issuer"], "default", "{answer}");
    assert_eq!(revoked["covered"], format!("{kind} {value}"), "{answer}");
    let at = revoked["at"].as_u64().expect("at");
    assert!(at >= before && at <= unix_now(), "{answer}");
    assert_eq!(revoked["until"].as_u64(), Some(at + 24 * 3600), "{answer}");
}

/// The service's log lines of revocation requests with `result`.
fn requests_logged(stack: &Stack, result: &str) -> usize {
    let result = format!("result=\"{result}\"");
    log_lines(&stack.service.log)
        .iter()
        .filter(|l| l.contains("revocation request") && l.contains(&result))
        .count()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_request_revokes_a_user_a_session_or_a_subject_and_a_new_login_is_admitted() {
    an_admins_request_revokes_a_user_a_session_or_a_subject_and_a_new_login_is_admitted_in(false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_request_revokes_a_user_a_session_or_a_subject_and_a_new_login_is_admitted_in_operator_mode(
) {
    an_admins_request_revokes_a_user_a_session_or_a_subject_and_a_new_login_is_admitted_in(true)
        .await;
}

async fn an_admins_request_revokes_a_user_a_session_or_a_subject_and_a_new_login_is_admitted_in(
    operator: bool,
) {
    let stack = Stack::start(options(operator)).await;
    let url = stack.url();
    wait_for_log(
        &stack.service.log,
        "answering revocation requests",
        Duration::from_secs(5),
    )
    .await;
    let ana = session_token(&stack, "ana", "s1");
    let bo = session_token(&stack, "bo", "s2");
    let (cy_1, cy_2) = (
        session_token(&stack, "cy", "s3"),
        session_token(&stack, "cy", "s4"),
    );
    let dee = session_token(&stack, "dee", "s5");
    for token in [&ana, &bo, &cy_1, &cy_2, &dee] {
        connect(&url, token).await.expect("admitted before");
    }
    let admin = admin(&stack).await;

    admin_revokes(&admin, "user", "ana").await;
    assert_refused_as(&stack, "revoked", "ana's user name", connect(&url, &ana)).await;
    connect(&url, &bo).await.expect("bo is not covered");
    admin_revokes(&admin, "sid", "s3").await;
    assert_refused_as(&stack, "revoked", "cy's session", connect(&url, &cy_1)).await;
    connect(&url, &cy_2)
        .await
        .expect("cy's other session is not covered");
    admin_revokes(&admin, "sub", "user-dee").await;
    assert_refused_as(&stack, "revoked", "dee's subject", connect(&url, &dee)).await;
    connect(&url, &bo).await.expect("bo is still not covered");

    // Into the bucket, where every replica reads it, with its signal.
    assert_eq!(stored(&stack).await.len(), 3);
    wait_for_count(&stack.service.log, "signal=request", 3).await;
    assert_eq!(
        requests_logged(&stack, "accepted"),
        3,
        "one line per request:\n{}",
        stack.service.log_text()
    );

    // A login after the revocation is admitted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    connect(&url, &session_token(&stack, "ana", "s6"))
        .await
        .expect("a token issued after the revocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_users_cannot_reach_the_request_subject() {
    oidc_users_cannot_reach_the_request_subject_in(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_users_cannot_reach_the_request_subject_in_operator_mode() {
    oidc_users_cannot_reach_the_request_subject_in(true).await;
}

async fn oidc_users_cannot_reach_the_request_subject_in(operator: bool) {
    let stack = Stack::start(options(operator)).await;
    let url = stack.url();
    let body = json!({ "issuer": "default", "user": "ana" }).to_string();

    // A role without the subject: nats-server refuses the publish.
    let mut writer = connect(&url, &stack.token("wu", &["writer"]))
        .await
        .unwrap();
    writer
        .client
        .publish(SUBJECT, body.clone().into())
        .await
        .unwrap();
    writer.client.flush().await.unwrap();
    assert!(writer.violation("publish").await, "{:?}", writer.events());

    // A role that may publish anywhere lands in APP, not in the callout's
    // account: no one there answers, and the service hears nothing.
    let anyone = connect(&url, &session_token(&stack, "mallory", "s9"))
        .await
        .unwrap();
    let asked = anyone.client.request(SUBJECT, body.clone().into()).await;
    assert_eq!(
        asked.map(|_| ()).unwrap_err().kind(),
        async_nats::RequestErrorKind::NoResponders
    );
    anyone.client.publish(SUBJECT, body.into()).await.unwrap();
    anyone.client.flush().await.unwrap();
    server_has_read(&anyone.client).await;

    for result in ["accepted", "refused", "failed"] {
        assert_eq!(requests_logged(&stack, result), 0, "{result}");
    }
    assert!(stored(&stack).await.is_empty());
    connect(&url, &session_token(&stack, "ana", "s1"))
        .await
        .expect("nothing was revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_answered_with_an_error_and_revoke_nothing() {
    bad_requests_are_answered_with_an_error_and_revoke_nothing_in(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_answered_with_an_error_and_revoke_nothing_in_operator_mode() {
    bad_requests_are_answered_with_an_error_and_revoke_nothing_in(true).await;
}

async fn bad_requests_are_answered_with_an_error_and_revoke_nothing_in(operator: bool) {
    let stack = Stack::start(options(operator)).await;
    let url = stack.url();
    let ana = session_token(&stack, "ana", "s1");
    connect(&url, &ana).await.expect("admitted before");
    let admin = admin(&stack).await;

    let too_big = json!({ "issuer": "default", "sub": "a".repeat(9000) }).to_string();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "the request is not a JSON object"),
        (Vec::new(), "the request is not a JSON object"),
        (
            br#"{"issuer": "default", "sub": "user-ana", "user": "ana"}"#.to_vec(),
            "the request names sub and user: it needs exactly one of sub, sid, user",
        ),
        (
            br#"{"issuer": "default"}"#.to_vec(),
            "the request names none of sub, sid, user",
        ),
        (
            br#"{"issuer": "corp", "user": "ana"}"#.to_vec(),
            r#"issuer corp: no [oidc] block of that name; the config has ["default"]"#,
        ),
        (
            br#"{"issuer": "default", "sid": "s1\n\u001b[2K"}"#.to_vec(),
            r#"sid "s1\n\u{1b}[2K" has control characters"#,
        ),
        (
            br#"{"issuer": "default", "user": ""}"#.to_vec(),
            "user is empty",
        ),
        (
            br#"{"issuer": "default", "user": "ana", "reason": "stolen"}"#.to_vec(),
            "unknown field `reason`",
        ),
        (too_big.into_bytes(), "more than 8192"),
    ];
    let n = cases.len();
    for (body, says) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>();
        let answer = request(&admin, body).await;
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{shown}: {answer}"));
        assert!(error.contains(says), "{shown}: {error}");
        assert!(answer.get("revoked").is_none(), "{answer}");
    }

    assert_eq!(
        requests_logged(&stack, "refused"),
        n,
        "one line per request:\n{}",
        stack.service.log_text()
    );
    let log = stack.service.log_text();
    assert!(!log.contains('\u{1b}'), "a raw escape reached the log");
    assert!(stored(&stack).await.is_empty(), "nothing was revoked");
    connect(&url, &ana).await.expect("ana is not covered");
    // The service answers on, and a good request after them all revokes.
    admin_revokes(&admin, "user", "ana").await;
    assert_refused_as(&stack, "revoked", "ana's user name", connect(&url, &ana)).await;
}
