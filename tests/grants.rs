//! Large permission sets: a connection asks for the scopes it uses and gets
//! the intersection with what it is entitled to (token claim or KV bucket);
//! grants written to the KV bucket apply to the next connect. Through a real
//! nats-server with JetStream.

mod common;

use std::time::Duration;

use async_nats::ConnectOptions;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

const BUCKET: &str = "callout-grants";

const ROLES: &str = r#"
[roles.admin]
pub.allow = [">"]
sub.allow = [">"]

[roles.member]
pub.allow = ["chat.{{scope}}.in", "_INBOX.>"]
sub.allow = ["chat.{{scope}}.>", "_INBOX.>"]
sub.deny = ["chat.{{scope}}.admin"]

[roles.lurker]
sub.allow = ["chat.>", "_INBOX.>"]

[grants]
kv_bucket = "callout-grants"
max_requested_scopes = 8
"#;

async fn start() -> Stack {
    let issuer = DevIssuer::start(0).await.unwrap();
    let keys = CalloutKeys::new();
    let nats = NatsServer::start_jetstream(&keys.issuer.public_key());
    let service = CalloutService::start(
        &nats.url(),
        &issuer.issuer(),
        &keys,
        ServiceOptions {
            extra_oidc: "scopes_claim = \"rooms\"".into(),
            roles: ROLES.into(),
            ..Default::default()
        },
    )
    .await;
    wait_for_log(&service.log, "KV grants loaded", Duration::from_secs(20)).await;
    Stack {
        issuer,
        keys,
        nats,
        service,
        operator: None,
    }
}

/// A member token entitled to `rooms` by its claim.
fn member_token(stack: &Stack, user: &str, rooms: &[String]) -> String {
    let mut claims = stack.issuer.claims(user, AUDIENCE, &["member"], 300);
    claims["rooms"] = json!(rooms);
    let kid = stack.issuer.current_kid(Algorithm::RS256);
    stack.issuer.sign(&kid, &claims)
}

async fn connect_named(
    stack: &Stack,
    token: &str,
    name: &str,
) -> Result<TestClient, async_nats::ConnectError> {
    connect_with(
        &stack.url(),
        ConnectOptions::with_user_and_password("any".into(), token.into()).name(name),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gets_only_the_scopes_it_asks_for_and_is_entitled_to() {
    let stack = start().await;
    let admin = connect(&stack.url(), &stack.token("ana", &["admin"]))
        .await
        .unwrap();
    // Entitled to 1,000 rooms: far more than a user JWT should carry.
    let rooms: Vec<String> = (0..1000).map(|i| format!("room-{i}")).collect();
    let token = member_token(&stack, "mia", &rooms);
    let mia = connect_named(&stack, &token, "chat-app scope=room-7,room-42,room-x")
        .await
        .expect("member with scopes");
    assert!(delivered(&admin.client, &mia.client, "chat.room-7.msg").await);
    assert!(delivered(&admin.client, &mia.client, "chat.room-42.msg").await);
    assert!(
        not_delivered(&admin.client, &mia.client, "chat.room-8.msg").await,
        "entitled but not asked for"
    );
    assert!(
        not_delivered(&admin.client, &mia.client, "chat.room-x.msg").await,
        "asked for but not entitled"
    );

    // A scoped deny holds for every scope: asking for none does not lift it
    // while another role allows all of chat.
    let mut claims = stack
        .issuer
        .claims("lu", AUDIENCE, &["member", "lurker"], 300);
    claims["rooms"] = json!(["room-1"]);
    let lurker_token = stack
        .issuer
        .sign(&stack.issuer.current_kid(Algorithm::RS256), &claims);
    let lu = connect_named(&stack, &lurker_token, "chat-app")
        .await
        .unwrap();
    assert!(delivered(&admin.client, &lu.client, "chat.room-1.news").await);
    assert!(
        not_delivered(&admin.client, &lu.client, "chat.room-1.admin").await,
        "the member role's deny applies to unasked scopes too"
    );

    // Asking for nothing grants nothing scoped.
    let idle = connect_named(&stack, &token, "chat-app")
        .await
        .expect("connects");
    assert!(not_delivered(&admin.client, &idle.client, "chat.room-7.msg").await);

    // Too many scopes, and entitlements that would widen a subject, are
    // decided in-process (`decisions.rs`).
}

/// Waits until the service has applied its `n`th change of the bucket
/// (what "the next connect" follows): the watch delivers a change a moment
/// after it is written, later on a busy machine.
async fn applied(stack: &Stack, n: usize) {
    wait_for_count(&stack.service.log, "KV grant changed", n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_written_to_the_kv_bucket_applies_to_the_next_connect() {
    let stack = start().await;
    let js = async_nats::jetstream::new(callout_user(&stack.url()).await);
    let bucket = js
        .get_key_value(BUCKET)
        .await
        .expect("the service created the bucket");
    let admin = connect(&stack.url(), &stack.token("ana", &["admin"]))
        .await
        .unwrap();
    // bo's token carries no role and no rooms.
    let token = stack.token("bo", &[]);
    assert_refused_as(
        &stack,
        "no_mapped_role",
        "before the grant",
        connect_named(&stack, &token, "scope=room-5"),
    )
    .await;

    bucket
        .put(
            "default.bo",
            r#"{"roles":["member"],"scopes":["room-5"]}"#.into(),
        )
        .await
        .unwrap();
    applied(&stack, 1).await;
    let bo = connect_named(&stack, &token, "scope=room-5,room-6")
        .await
        .expect("the grant applies to the next connect");
    assert!(delivered(&admin.client, &bo.client, "chat.room-5.msg").await);
    assert!(
        not_delivered(&admin.client, &bo.client, "chat.room-6.msg").await,
        "room-6 is not in the grant"
    );

    // Widening the grant, then revoking it.
    bucket
        .put(
            "default.bo",
            r#"{"roles":["member"],"scopes":["room-5","room-6"]}"#.into(),
        )
        .await
        .unwrap();
    applied(&stack, 2).await;
    let bo2 = connect_named(&stack, &token, "scope=room-6").await.unwrap();
    assert!(delivered(&admin.client, &bo2.client, "chat.room-6.msg").await);
    bucket.delete("default.bo").await.unwrap();
    applied(&stack, 3).await;
    assert_refused_as(
        &stack,
        "no_mapped_role",
        "after the grant is deleted",
        connect_named(&stack, &token, "scope=room-5"),
    )
    .await;
    // A malformed grant grants nothing.
    bucket
        .put("default.bo", r#"{"roles":"admin"}"#.into())
        .await
        .unwrap();
    applied(&stack, 4).await;
    assert_refused_as(
        &stack,
        "no_mapped_role",
        "a malformed grant",
        connect_named(&stack, &token, "scope=room-5"),
    )
    .await;

    // When the bucket can no longer be followed, its grants stop applying
    // (a delete made meanwhile could not be seen).
    bucket
        .put(
            "default.bo",
            r#"{"roles":["member"],"scopes":["room-5"]}"#.into(),
        )
        .await
        .unwrap();
    applied(&stack, 5).await;
    connect_named(&stack, &token, "scope=room-5")
        .await
        .expect("granted again");
    js.delete_key_value(BUCKET).await.unwrap();
    wait_for_log(
        &stack.service.log,
        "no KV grants apply until the bucket is read again",
        Duration::from_secs(30),
    )
    .await;
    assert_refused_as(
        &stack,
        "no_mapped_role",
        "grants of a bucket no longer followed",
        connect_named(&stack, &token, "scope=room-5"),
    )
    .await;
}
