//! JetStream and KV grants (`[roles.<name>.jetstream]`, `[roles.<name>.kv]`)
//! against a real JetStream-enabled nats-server, with async-nats: each grant
//! does what its row in the README's grant table says, and nothing more.
//! (`clients.rs` runs the same grants with nats-py.)

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, Context};
use common::fixtures::{self, API};
use common::*;
use futures::StreamExt;

async fn stack() -> Stack {
    Stack::start(ServiceOptions {
        jetstream: true,
        roles: fixtures::GRANT_ROLES.into(),
        ..ServiceOptions::default()
    })
    .await
}

/// A client with `roles`, and its JetStream context with a short timeout:
/// a request the server refuses to route is never answered. Users in APP
/// reach the streams of DATA through the API prefix APP imports them
/// under; the administrator is placed in DATA itself.
async fn js_client(stack: &Stack, user: &str, roles: &[&str]) -> (TestClient, Context) {
    let client = connect(&stack.url(), &stack.token(user, roles))
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    let builder = jetstream::ContextBuilder::new().timeout(Duration::from_secs(2));
    let js = if roles == ["admin"] {
        builder.build(client.client.clone())
    } else {
        builder.api_prefix(API).build(client.client.clone())
    };
    (client, js)
}

/// `$JS.DATA.API.<rest>`: a JetStream API subject as users in APP see it.
fn api(rest: &str) -> String {
    format!("{API}.{rest}")
}

/// Asserts that `result` failed because nats-server refused to publish on
/// `subject` (a permissions violation the client was told about).
async fn refused<T, E: std::fmt::Debug>(
    client: &mut TestClient,
    result: Result<T, E>,
    subject: &str,
    case: &str,
) {
    assert!(result.is_err(), "{case}: allowed");
    let needle = format!("permissions violation for publish to \"{subject}\"");
    assert!(
        client.wait_event(&needle, Duration::from_secs(3)).await,
        "{case}: no {needle:?}; events: {:?}, result: {:?}",
        client.events(),
        result.err()
    );
}

#[tokio::test]
async fn consume_fetches_and_acks_its_durable_and_nothing_else() {
    let stack = stack().await;
    let (_a, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::orders(&admin).await;
    let (mut client, js) = js_client(&stack, "ana", &["worker"]).await;

    let worker: consumer::PullConsumer = js
        .get_consumer_from_stream("worker", "ORDERS")
        .await
        .expect("consumer info of its durable");
    let mut batch = worker
        .fetch()
        .max_messages(2)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("pull fetch");
    let mut got = Vec::new();
    while let Some(m) = batch.next().await {
        let m = m.expect("a message");
        got.push(String::from_utf8_lossy(&m.payload).to_string());
        m.double_ack().await.expect("ack confirmed");
    }
    assert_eq!(got, ["first", "second"]);
    let info = admin
        .get_consumer_from_stream::<consumer::pull::Config, _, _>("worker", "ORDERS")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(
        info.ack_floor.stream_sequence, 2,
        "both acks reached the server"
    );

    let other = js
        .get_consumer_from_stream::<consumer::pull::Config, _, _>("other", "ORDERS")
        .await;
    refused(
        &mut client,
        other,
        &api("CONSUMER.INFO.ORDERS.other"),
        "info of another consumer",
    )
    .await;
    let next = client
        .client
        .request(api("CONSUMER.MSG.NEXT.ORDERS.other"), "1".into())
        .await;
    refused(
        &mut client,
        next,
        &api("CONSUMER.MSG.NEXT.ORDERS.other"),
        "fetch from another consumer",
    )
    .await;
    let delete = js.delete_stream("ORDERS").await;
    refused(
        &mut client,
        delete,
        &api("STREAM.DELETE.ORDERS"),
        "delete the stream",
    )
    .await;
    let info = js.get_stream("ORDERS").await;
    refused(
        &mut client,
        info,
        &api("STREAM.INFO.ORDERS"),
        "stream info is not part of consume",
    )
    .await;
}

#[tokio::test]
async fn read_gets_messages_and_cannot_purge_or_touch_consumers() {
    let stack = stack().await;
    let (_a, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::orders(&admin).await;
    let (mut client, js) = js_client(&stack, "rita", &["reader"]).await;

    let mut orders = js.get_stream("ORDERS").await.expect("stream info");
    assert_eq!(orders.info().await.unwrap().state.messages, 2);
    let by_seq = orders.get_raw_message(1).await.expect("get by sequence");
    assert_eq!(&by_seq.payload[..], b"first");
    let direct = orders.direct_get(2).await.expect("direct get");
    assert_eq!(&direct.payload[..], b"second");
    let last = orders
        .direct_get_last_for_subject("orders.new")
        .await
        .expect("direct get, last by subject");
    assert_eq!(&last.payload[..], b"first");

    let purge = orders.purge().await;
    refused(&mut client, purge, &api("STREAM.PURGE.ORDERS"), "purge").await;
    let create = orders
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await;
    refused(
        &mut client,
        create,
        &api("CONSUMER.CREATE.ORDERS"),
        "read creates no consumer",
    )
    .await;
    let worker = js
        .get_consumer_from_stream::<consumer::pull::Config, _, _>("worker", "ORDERS")
        .await;
    refused(
        &mut client,
        worker,
        &api("CONSUMER.INFO.ORDERS.worker"),
        "read touches no consumer",
    )
    .await;
    assert_eq!(
        admin
            .get_stream("ORDERS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages,
        2,
        "nothing was purged"
    );
}

#[tokio::test]
async fn replay_reads_the_stream_through_an_ordered_consumer() {
    let stack = stack().await;
    let (_a, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::orders(&admin).await;
    let (mut client, js) = js_client(&stack, "remy", &["replayer"]).await;

    let orders = js.get_stream("ORDERS").await.expect("stream info");
    let ordered = orders
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("an ordered consumer");
    let mut messages = ordered.messages().await.expect("pull");
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("messages arrive")
            .unwrap()
            .unwrap();
        got.push(String::from_utf8_lossy(&m.payload).to_string());
    }
    assert_eq!(got, ["first", "second"]);

    let purge = orders.purge().await;
    refused(&mut client, purge, &api("STREAM.PURGE.ORDERS"), "purge").await;
    let delete = orders.delete_consumer("worker").await;
    refused(
        &mut client,
        delete,
        &api("CONSUMER.DELETE.ORDERS.worker"),
        "delete a consumer",
    )
    .await;
}

#[tokio::test]
async fn manage_creates_and_deletes_its_stream_only() {
    let stack = stack().await;
    let (_a, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::orders(&admin).await;
    let (mut client, js) = js_client(&stack, "olga", &["ops"]).await;

    let scratch = js
        .create_stream(stream::Config {
            name: "SCRATCH".into(),
            subjects: vec!["scratch.>".into()],
            ..Default::default()
        })
        .await
        .expect("create its stream");
    scratch
        .create_consumer(consumer::pull::Config {
            durable_name: Some("tmp".into()),
            ..Default::default()
        })
        .await
        .expect("create a consumer on it");
    scratch.delete_consumer("tmp").await.expect("delete it");
    js.delete_stream("SCRATCH")
        .await
        .expect("delete its stream");

    let other = js
        .create_stream(stream::Config {
            name: "OTHER".into(),
            subjects: vec!["other.>".into()],
            ..Default::default()
        })
        .await;
    refused(
        &mut client,
        other,
        &api("STREAM.CREATE.OTHER"),
        "create another stream",
    )
    .await;
    let delete = js.delete_stream("ORDERS").await;
    refused(
        &mut client,
        delete,
        &api("STREAM.DELETE.ORDERS"),
        "delete another stream",
    )
    .await;
    assert!(
        admin.get_stream("ORDERS").await.is_ok(),
        "ORDERS is still there"
    );
}

#[tokio::test]
async fn kv_read_and_write_follow_buckets_and_per_user_key_patterns() {
    let stack = stack().await;
    let (_a, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::buckets(&admin).await;

    let (mut client, js) = js_client(&stack, "ana", &["profile"]).await;
    // A whole bucket: get, watch, keys, history.
    let config = js.get_key_value("config").await.expect("open config");
    assert_eq!(
        config.get("theme").await.expect("get").as_deref(),
        Some(&b"dark"[..])
    );
    let keys: Vec<String> = config
        .keys()
        .await
        .expect("keys")
        .map(|k| k.unwrap())
        .collect()
        .await;
    assert_eq!(keys, ["theme"]);
    let history: Vec<_> = config
        .history("theme")
        .await
        .expect("history")
        .collect()
        .await;
    assert_eq!(history.len(), 1);
    let mut watch = config.watch("theme").await.expect("watch");
    config_put_by(&admin, "theme", "light").await;
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch sees the update")
        .unwrap()
        .unwrap();
    assert_eq!(&seen.value[..], b"light");
    let put = config.put("theme", "mine".into()).await;
    refused(
        &mut client,
        put,
        &api("$KV.config.theme"),
        "write a read-only bucket",
    )
    .await;

    // Its own keys: read and write.
    let profiles = js.get_key_value("profiles").await.expect("open profiles");
    profiles
        .put("ana.email", "ana@example.com".into())
        .await
        .expect("put own key");
    assert_eq!(
        profiles
            .get("ana.email")
            .await
            .expect("get own key")
            .as_deref(),
        Some(&b"ana@example.com"[..])
    );
    profiles.delete("ana.email").await.expect("delete own key");
    assert_eq!(profiles.get("ana.email").await.expect("get"), None);

    // Another user's keys: neither.
    let put = profiles.put("bob.email", "hijacked".into()).await;
    refused(
        &mut client,
        put,
        &api("$KV.profiles.bob.email"),
        "write another's key",
    )
    .await;
    let get = profiles.get("bob.email").await;
    refused(
        &mut client,
        get,
        &api("DIRECT.GET.KV_profiles.$KV.profiles.bob.email"),
        "read another's key",
    )
    .await;
    // Watch and keys cannot be scoped to some keys: a key-pattern read
    // does not grant them.
    let keys = profiles.keys().await;
    refused(
        &mut client,
        keys.map(|_| ()),
        &api("CONSUMER.CREATE.KV_profiles"),
        "list keys of a bucket it may read only some keys of",
    )
    .await;
    // A name that would reach past its keys refuses the connection, as in
    // any subject.
    for hostile in ["bob.email", "*", ">"] {
        assert_refused_as(
            &stack,
            "subject_template",
            hostile,
            connect(&stack.url(), &stack.token(hostile, &["profile"])),
        )
        .await;
    }
    let admin_profiles = admin.get_key_value("profiles").await.unwrap();
    assert_eq!(
        admin_profiles.get("bob.email").await.unwrap().as_deref(),
        Some(&b"bob@example.com"[..])
    );
}

async fn config_put_by(admin: &Context, key: &str, value: &str) {
    let config = admin.get_key_value("config").await.unwrap();
    config.put(key, value.to_string().into()).await.unwrap();
}

/// Subject permissions cannot see headers: a put of one's own key with
/// `Nats-Rollup: all` purges every key of the bucket. The README says so,
/// and that a bucket that refuses rollups stops it; this is that proof.
#[tokio::test]
async fn a_key_pattern_write_can_empty_the_bucket_unless_it_refuses_rollups() {
    let stack = stack().await;
    let (_a, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::buckets(&admin).await;
    let (_c, js) = js_client(&stack, "ana", &["profile"]).await;
    let rollup_all = || {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Rollup", "all");
        headers
    };
    let bob = |admin: Context| async move {
        admin
            .get_key_value("profiles")
            .await
            .unwrap()
            .get("bob.email")
            .await
            .unwrap()
    };

    js.publish_with_headers("$KV.profiles.ana.x", rollup_all(), "wipe".into())
        .await
        .unwrap()
        .await
        .expect("a rollup on its own key is accepted");
    assert_eq!(bob(admin.clone()).await, None, "bob's key went with it");

    let mut stream = admin.get_stream("KV_profiles").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.allow_rollup = false;
    admin.update_stream(config).await.expect("rollups refused");
    let profiles = admin.get_key_value("profiles").await.unwrap();
    profiles
        .put("bob.email", "bob@example.com".into())
        .await
        .unwrap();
    let wipe = js
        .publish_with_headers("$KV.profiles.ana.x", rollup_all(), "wipe".into())
        .await
        .unwrap()
        .await;
    assert!(wipe.is_err(), "the bucket refuses the rollup");
    assert!(
        bob(admin.clone()).await.is_some(),
        "bob's key is still there"
    );
    let own = js.get_key_value("profiles").await.unwrap();
    own.put("ana.email", "ana@example.com".into())
        .await
        .expect("puts still work");
}

// What subject permissions cannot hold. The README's notes under the grant
// table say what each grant really means; these pin the nats-server
// behaviour behind them, so that a server release that changes it shows up
// here rather than in a deployment.

/// A JetStream API request answered on the client's own inbox, as JSON.
async fn api_request(
    client: &TestClient,
    subject: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        client
            .client
            .request(subject.to_string(), body.to_string().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject}: no answer"))
    .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&reply.payload).unwrap()
}

/// Payloads arriving on `sub` within a short while.
async fn drain(sub: &mut async_nats::Subscriber, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < want {
        match tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
            Ok(Some(m)) => got.push(String::from_utf8_lossy(&m.payload).to_string()),
            _ => break,
        }
    }
    got.sort();
    got
}

/// README, replay: a consumer create sets its delivery subject in the
/// request body and nats-server delivers with its own rights, in the
/// account holding the streams. In the recommended layout only inboxes
/// cross into the users' account: a delivery to any other subject stays in
/// DATA, and one to an inbox reaches that inbox in APP, whoever's it is.
#[tokio::test]
async fn a_consumer_create_delivers_wherever_its_body_says() {
    let stack = stack().await;
    let (data_admin, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::orders(&admin).await;
    let (app_admin, _) = js_client(&stack, "appie", &["app-admin"]).await;
    let mut in_data = data_admin
        .client
        .subscribe("elsewhere.orders")
        .await
        .unwrap();
    server_has_read(&data_admin.client).await;
    let mut in_app = app_admin
        .client
        .subscribe("elsewhere.orders")
        .await
        .unwrap();
    let mut victim_inbox = app_admin.client.subscribe("_INBOX.victim.x").await.unwrap();
    server_has_read(&app_admin.client).await;
    let (mut replayer, _) = js_client(&stack, "rex", &["replayer"]).await;

    for deliver in ["elsewhere.orders", "_INBOX.victim.x"] {
        let created = api_request(
            &replayer,
            &api("CONSUMER.CREATE.ORDERS"),
            serde_json::json!({
                "stream_name": "ORDERS",
                "config": {"deliver_subject": deliver, "ack_policy": "none"}
            }),
        )
        .await;
        assert!(created.get("error").is_none(), "{created}");
    }
    assert_eq!(drain(&mut in_data, 2).await, ["first", "second"]);
    assert_eq!(
        drain(&mut victim_inbox, 2).await,
        ["first", "second"],
        "an inbox of the users' account is reachable"
    );
    assert!(
        drain(&mut in_app, 1).await.is_empty(),
        "nothing but inboxes crosses into APP"
    );
    // The replayer itself may not publish there.
    replayer
        .client
        .publish("elsewhere.orders", "forged".into())
        .await
        .unwrap();
    assert!(
        replayer
            .wait_event(
                "permissions violation for publish to \"elsewhere.orders\"",
                Duration::from_secs(3)
            )
            .await,
        "{:?}",
        replayer.events()
    );
}

/// README, manage: "its subjects capture any subject, mirror/sources copy
/// any other stream" of the account holding the streams.
#[tokio::test]
async fn a_managed_stream_captures_any_subject_and_copies_any_stream() {
    let stack = stack().await;
    let (admin_client, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::orders(&admin).await;
    let token = stack.token("olga", &["ops"]);
    let (ops, _) = js_client(&stack, "olga", &["ops"]).await;

    let created = api_request(
        &ops,
        &api("STREAM.CREATE.SCRATCH"),
        serde_json::json!({
            "name": "SCRATCH",
            "subjects": ["payroll.>"],
            "sources": [{"name": "ORDERS"}],
        }),
    )
    .await;
    assert!(created.get("error").is_none(), "{created}");
    admin_client
        .client
        .publish("payroll.jan", "salaries".into())
        .await
        .unwrap();
    admin_client.client.flush().await.unwrap();
    let inbox = format!(
        "{}.scratch",
        nats_oidc_callout::client::inbox::of_token(&token).unwrap()
    );
    let mut delivered = ops.client.subscribe(inbox.clone()).await.unwrap();
    server_has_read(&ops.client).await;
    let consumer = api_request(
        &ops,
        &api("CONSUMER.CREATE.SCRATCH"),
        serde_json::json!({
            "stream_name": "SCRATCH",
            "config": {"deliver_subject": inbox, "ack_policy": "none"}
        }),
    )
    .await;
    assert!(consumer.get("error").is_none(), "{consumer}");
    assert_eq!(
        drain(&mut delivered, 3).await,
        ["first", "salaries", "second"],
        "what others published on payroll.> and everything in ORDERS"
    );
}

/// README, KV reads: "a client may publish a literal `>` where a permission
/// has `*`, which a direct get ... reads as a wildcard" (why key patterns
/// take no `*`), and "opening the bucket (stream info, which clients
/// need) can list every key".
#[tokio::test]
async fn a_star_permission_admits_a_literal_gt_and_stream_info_lists_every_key() {
    let stack = Stack::start(ServiceOptions {
        jetstream: true,
        roles: format!(
            "{}\n[roles.star]\naccount = \"DATA\"\nsub.allow = [\"_INBOX.>\"]\npub.allow = [\"$JS.API.DIRECT.GET.KV_profiles.$KV.profiles.*\"]\n",
            fixtures::GRANT_ROLES
        ),
        ..ServiceOptions::default()
    })
    .await;
    let (_a, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::buckets(&admin).await;

    let (star, _) = js_client(&stack, "stan", &["star"]).await;
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        star.client
            .request("$JS.API.DIRECT.GET.KV_profiles.$KV.profiles.>", "".into()),
    )
    .await
    .expect("an answer")
    .expect("the server let the literal '>' through a '*' permission");
    assert_eq!(
        &reply.payload[..],
        b"bob@example.com",
        "a key two tokens deep, which '*' alone would not reach"
    );

    // ana may read only profiles/ana.>, yet stream info names bob's key.
    let (ana, _) = js_client(&stack, "ana", &["profile"]).await;
    let info = api_request(
        &ana,
        &api("STREAM.INFO.KV_profiles"),
        serde_json::json!({"subjects_filter": ">"}),
    )
    .await;
    assert!(
        info["state"]["subjects"]
            .get("$KV.profiles.bob.email")
            .is_some(),
        "{info}"
    );
}
