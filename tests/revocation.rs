//! Revocation through a real nats-server: a back-channel logout received
//! by the service is kept in the revocation list's KV bucket, and tokens
//! issued before it are refused (`revoked`) by every replica, while a new
//! login is admitted. (Closing live connections: not yet.)

mod common;

use std::time::Duration;

use common::*;

const LOGOUT_AUDIENCE: &str = "portal";

fn options() -> ServiceOptions {
    ServiceOptions {
        jetstream: true,
        extra_oidc: format!("logout_audience = \"{LOGOUT_AUDIENCE}\"\n"),
        revocation: "kv_bucket = \"revocations\"\nbackchannel_listen = \"127.0.0.1:0\"".into(),
        ..ServiceOptions::default()
    }
}

/// A token of `user` in login session `sid`.
fn session_token(stack: &Stack, user: &str, sid: &str) -> String {
    stack
        .issuer
        .token_with_sid(user, AUDIENCE, &["admin"], 300, sid)
}

/// The issuer logs `sub`/`sid` out through `service`'s endpoint.
async fn logout(stack: &Stack, service: &CalloutService, sub: Option<&str>, sid: Option<&str>) {
    let token = stack.issuer.logout_token(sub, sid, LOGOUT_AUDIENCE);
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/backchannel-logout",
            service.backchannel_port()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
}

/// A token issued after now (iat is in whole seconds).
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_refuses_the_tokens_it_covers_on_every_replica_and_admits_a_new_login() {
    let stack = Stack::start(options()).await;
    let url = stack.url();
    let (ana_1, ana_2) = (
        session_token(&stack, "ana", "s1"),
        session_token(&stack, "ana", "s2"),
    );
    let bo = session_token(&stack, "bo", "s3");
    for token in [&ana_1, &ana_2, &bo] {
        connect(&url, token)
            .await
            .expect("admitted before the logout");
    }

    // One session of ana's: that session only.
    logout(&stack, &stack.service, Some("user-ana"), Some("s1")).await;
    assert_refused_as(
        &stack,
        "revoked",
        "ana's ended session",
        connect(&url, &ana_1),
    )
    .await;
    connect(&url, &ana_2)
        .await
        .expect("ana's other session is not covered");

    // All of ana's sessions; bo's are untouched.
    logout(&stack, &stack.service, Some("user-ana"), None).await;
    assert_refused_as(
        &stack,
        "revoked",
        "ana's every session",
        connect(&url, &ana_2),
    )
    .await;
    connect(&url, &bo)
        .await
        .expect("another user is not covered");

    // A login after the logout is admitted.
    next_second().await;
    connect(&url, &session_token(&stack, "ana", "s4"))
        .await
        .expect("a token issued after the logout");

    // Another replica, started now, reads the list from the bucket; with
    // the first one gone, it alone answers.
    let mut stack = stack;
    let second = stack.service.replica().await;
    wait_for_log(
        &second.log,
        "revocation list loaded",
        Duration::from_secs(20),
    )
    .await;
    stack.service.kill();
    let first = std::mem::replace(&mut stack.service, second);
    drop(first);
    assert_refused_as(
        &stack,
        "revoked",
        "the other replica",
        connect(&url, &ana_1),
    )
    .await;
    connect(&url, &bo)
        .await
        .expect("the other replica admits who is not covered");
}

/// With a system-account login, a revocation also closes the live
/// connections it covers (each replica those it admitted), and their
/// reconnects with the same tokens are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_closes_the_live_connections_it_covers_and_no_other() {
    if operator_mode() {
        // The operator-mode stack has no system-account user yet.
        return;
    }
    let mut opts = options();
    opts.revocation
        .push_str("\nsystem_user = \"sys\"\nsystem_password = \"sys\"\n");
    let stack = Stack::start(opts).await;
    let url = stack.url();
    let mut ana_1 = connect(&url, &session_token(&stack, "ana", "s1"))
        .await
        .unwrap();
    let mut ana_2 = connect(&url, &session_token(&stack, "ana", "s2"))
        .await
        .unwrap();
    let bo = connect(&url, &session_token(&stack, "bo", "s3"))
        .await
        .unwrap();
    let refusals_before = count_in_log(&stack.service.log, "code=\"revoked\"");

    logout(&stack, &stack.service, Some("user-ana"), Some("s1")).await;
    assert!(
        ana_1
            .wait_event("disconnected", Duration::from_secs(20))
            .await,
        "the session's connection is closed: {:?}\n{}",
        ana_1.events(),
        stack.service.log_text()
    );
    wait_for_log(
        &stack.service.log,
        "connections_closed=1",
        Duration::from_secs(20),
    )
    .await;
    // Its client reconnects at once with the same token: refused.
    wait_for_count(&stack.service.log, "code=\"revoked\"", refusals_before + 1).await;
    assert!(
        !ana_2
            .wait_event("disconnected", Duration::from_millis(500))
            .await,
        "ana's other session stays: {:?}",
        ana_2.events()
    );
    assert!(delivered(&ana_2.client, &bo.client, "orders.after").await);
    assert!(delivered(&bo.client, &ana_2.client, "orders.after").await);
}
