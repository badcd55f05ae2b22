//! Role mapping seen from real clients: what each role may publish and
//! subscribe to, through a real nats-server with auth callout.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_can_publish_and_subscribe_everywhere() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let admin = stack.client("ana", &["admin"]).await;
    let other = stack.client("bo", &["admin"]).await;
    assert!(delivered(&admin.client, &other.client, "orders.new").await);
    assert!(delivered(&other.client, &admin.client, "anything.at.all").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_receives_orders_but_cannot_publish_them() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let admin = stack.client("ana", &["admin"]).await;
    let mut reader = stack.client("rita", &["reader"]).await;

    assert!(
        delivered(&admin.client, &reader.client, "orders.new").await,
        "reader may subscribe to orders.>"
    );
    assert!(
        not_delivered(&reader.client, &admin.client, "orders.new").await,
        "reader may not publish to orders.>"
    );
    assert!(
        reader.violation("publish").await,
        "server told the reader why: {:?}",
        reader.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_beats_allow_for_subscriptions() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let admin = stack.client("ana", &["admin"]).await;
    let mut reader = stack.client("rita", &["reader"]).await;

    assert!(
        not_delivered(&admin.client, &reader.client, "orders.secret.plans").await,
        "orders.secret.> is denied although orders.> is allowed"
    );
    assert!(
        reader.violation("subscription").await,
        "{:?}",
        reader.events()
    );
    assert!(
        delivered(&admin.client, &reader.client, "orders.public").await,
        "the rest of orders.> still flows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_says_nothing_about_subscribing_may_not_subscribe() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let admin = stack.client("ana", &["admin"]).await;
    let mut writer = stack.client("wes", &["writer"]).await;

    assert!(
        delivered(&writer.client, &admin.client, "orders.new").await,
        "writer publishes orders"
    );
    assert!(
        not_delivered(&writer.client, &admin.client, "orders.audit").await,
        "pub.deny beats pub.allow"
    );
    assert!(
        not_delivered(&admin.client, &writer.client, "orders.new").await,
        "no sub.allow means no subscribing"
    );
    assert!(writer.violation("subscription").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_combine_and_messages_flow_between_users() {
    let stack = Stack::start(ServiceOptions::default()).await;
    // One user with both roles gets the union: publish orders, read them back.
    let both = connect(
        &stack.url(),
        &stack.token("max", &["reader", "writer", "unknown-role"]),
    )
    .await
    .unwrap();
    let reader = stack.client("rita", &["reader"]).await;
    assert!(delivered(&both.client, &reader.client, "orders.created").await);
    assert!(delivered(&both.client, &both.client, "orders.created").await);

    // Request/reply across users: the reader answers the requests it
    // receives (resp), onto the asker's private inbox.
    let mut service = reader.client.subscribe("orders.lookup").await.unwrap();
    server_has_read(&reader.client).await;
    let responder = reader.client.clone();
    tokio::spawn(async move {
        if let Some(req) = service.next().await {
            responder
                .publish(req.reply.unwrap(), "found".into())
                .await
                .unwrap();
            responder.flush().await.unwrap();
        }
    });
    let answer = tokio::time::timeout(
        Duration::from_secs(3),
        both.client.request("orders.lookup", "42".into()),
    )
    .await
    .expect("answered in time")
    .expect("request succeeds");
    assert_eq!(answer.payload.as_ref(), b"found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_grants_never_reach_system_subjects() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let mut admin = stack.client("ana", &["admin"]).await;
    let _sub = admin.client.subscribe("$SYS.ACCOUNT.>").await.unwrap();
    admin.client.flush().await.unwrap();
    assert!(
        admin
            .wait_event(
                "permissions violation for subscription to \"$sys.account.>\"",
                Duration::from_secs(2)
            )
            .await,
        "{:?}",
        admin.events()
    );
    let reply = admin
        .client
        .request("$SYS.REQ.SERVER.PING.CONNZ", "".into());
    assert!(
        tokio::time::timeout(Duration::from_secs(2), reply)
            .await
            .map(|r| r.is_err())
            .unwrap_or(true),
        "account connection info is not reachable through \">\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_subjects_can_be_granted_by_name() {
    let roles = format!(
        "{}\n[roles.ops]\nsub.allow = [\"$SYS.ACCOUNT.>\"]\npub.allow = [\"_INBOX.>\"]\n",
        default_roles()
    );
    let stack = Stack::start(ServiceOptions {
        roles,
        ..Default::default()
    })
    .await;
    let mut ops = stack.client("olga", &["ops"]).await;
    let _sub = ops.client.subscribe("$SYS.ACCOUNT.>").await.unwrap();
    ops.client.flush().await.unwrap();
    assert!(
        !ops.wait_event("permissions violation", Duration::from_millis(500))
            .await,
        "{:?}",
        ops.events()
    );
}

/// Roles whose subjects are filled from the token: each member gets its own
/// `users.<sub>.>` and its organisation's chat rooms.
const TEMPLATED_ROLES: &str = r#"
[roles.member]
pub.allow = ["users.{{sub}}.>", "chat.{{claim:org.id}}.*"]
sub.allow = ["users.{{sub}}.>", "chat.{{claim:org.id}}.*", "_INBOX.>"]
sub.deny  = ["users.{{sub}}.private"]

[roles.admin]
pub.allow = [">"]
sub.allow = [">"]
"#;

fn member_token(stack: &Stack, sub: serde_json::Value, org: serde_json::Value) -> String {
    let mut claims = stack.issuer.claims("m", AUDIENCE, &["member"], 300);
    claims["sub"] = sub;
    claims["org"] = serde_json::json!({ "id": org });
    let kid = stack.issuer.current_kid(jsonwebtoken::Algorithm::RS256);
    stack.issuer.sign(&kid, &claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_templates_give_each_user_its_own_subjects() {
    let stack = Stack::start(ServiceOptions {
        roles: TEMPLATED_ROLES.into(),
        ..Default::default()
    })
    .await;
    let admin = stack.client("root", &["admin"]).await;
    let ana = connect(
        &stack.url(),
        &member_token(&stack, "ana".into(), "acme".into()),
    )
    .await
    .expect("member connects");
    let bob = connect(
        &stack.url(),
        &member_token(&stack, "bob".into(), "acme".into()),
    )
    .await
    .expect("member connects");

    assert!(delivered(&admin.client, &ana.client, "users.ana.inbox").await);
    assert!(
        not_delivered(&admin.client, &ana.client, "users.bob.inbox").await,
        "another user's subjects"
    );
    assert!(
        not_delivered(&admin.client, &ana.client, "users.ana.private").await,
        "templated deny"
    );
    assert!(delivered(&ana.client, &bob.client, "chat.acme.lobby").await);
    assert!(
        not_delivered(&admin.client, &ana.client, "chat.other.lobby").await,
        "another organisation's rooms"
    );
    assert!(
        not_delivered(&ana.client, &admin.client, "users.bob.inbox").await,
        "cannot publish as another user"
    );
}

/// A claim value that would change a subject's shape refuses the
/// connection at nats-server (every such value is decided in-process in
/// `decisions.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_claim_value_in_a_subject_template_is_refused() {
    let stack = Stack::start(ServiceOptions {
        roles: TEMPLATED_ROLES.into(),
        ..Default::default()
    })
    .await;
    assert_refused_as(
        &stack,
        "subject_template",
        "sub is >",
        connect(
            &stack.url(),
            &member_token(&stack, ">".into(), "acme".into()),
        ),
    )
    .await;
    connect(
        &stack.url(),
        &member_token(&stack, "ana".into(), "acme".into()),
    )
    .await
    .expect("a good member right after");
}

/// A value that fills a subject's first token never names a namespace every
/// user shares: a user named `_INBOX` with `{{name}}.>` would receive every
/// client's replies, one named `_R_` every service import's answers in the
/// exporting account (`_GR_` across gateways), one named `$JS` would run
/// the account's JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_value_never_opens_a_shared_namespace_at_the_server() {
    let stack = Stack::start(ServiceOptions {
        roles: "[roles.own]\npub.allow = [\"{{name}}.>\"]\nsub.allow = [\"{{name}}.>\"]\n\n[roles.admin]\npub.allow = [\">\"]\nsub.allow = [\">\"]\n".into(),
        ..Default::default()
    })
    .await;
    // The other shared namespaces are decided in-process (`decisions.rs`).
    assert_refused(&stack.url(), &stack.token("_INBOX", &["own"]), "_INBOX").await;
    wait_for_log(&stack.service.log, "$ or _,", Duration::from_secs(5)).await;
    let admin = stack.client("root", &["admin"]).await;
    let ana = stack.client("ana", &["own"]).await;
    assert!(delivered(&admin.client, &ana.client, "ana.inbox").await);
    assert!(not_delivered(&admin.client, &ana.client, "_INBOX.x").await);
}

/// Roles that place their users in another account than `callout.account`.
const ACCOUNT_ROLES: &str = r#"
[roles.team]
account = "TEAM"
pub.allow = [">"]
sub.allow = [">"]

[roles.reader]
sub.allow = ["_INBOX.>", "orders.>"]
pub.allow = ["_INBOX.>"]

[roles.admin]
pub.allow = [">"]
sub.allow = [">"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_can_place_its_users_in_another_account() {
    let stack = Stack::start(ServiceOptions {
        roles: ACCOUNT_ROLES.into(),
        ..Default::default()
    })
    .await;
    let app = stack.client("ana", &["admin"]).await;
    let t1 = stack.client("tim", &["team"]).await;
    // A role without an account defers to the one that names it.
    let t2 = stack.client("tia", &["team", "reader"]).await;
    assert!(
        delivered(&t1.client, &t2.client, "orders.new").await,
        "same account"
    );
    assert!(
        not_delivered(&app.client, &t1.client, "orders.new").await,
        "accounts are isolated"
    );
    assert!(
        not_delivered(&t1.client, &app.client, "orders.new").await,
        "accounts are isolated"
    );
    let log = stack.service.log_text();
    assert!(
        log.contains("user=tim") && log.contains("account=TEAM"),
        "{log}"
    );
}
