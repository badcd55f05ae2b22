//! JetStream and KV grants (`[roles.<name>.jetstream]`, `[roles.<name>.kv]`)
//! against a real JetStream-enabled nats-server, with async-nats: each grant
//! does what its row in the book's grant table (docs/src/guides/jetstream.md)
//! says, and nothing more.
//! (`clients.rs` runs the same grants with nats-py.)

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, Context};
use common::fixtures;
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
/// reach the streams of DATA through APP's import of its JetStream API; the
/// administrator is placed in DATA itself.
async fn js_client(stack: &Stack, user: &str, roles: &[&str]) -> (TestClient, Context) {
    let client = connect(&stack.url(), &stack.token(user, roles))
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client.client.clone());
    (client, js)
}

/// A stack with the grant roles, its administrator (placed in DATA, where
/// the streams live) and the ORDERS stream.
async fn orders_stack() -> (Stack, TestClient, Context) {
    let stack = stack().await;
    let (a, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::orders(&admin).await;
    (stack, a, admin)
}

/// The PAYROLL stream (payroll.>) with the durable pull consumer
/// `payroll-worker`, beside ORDERS.
async fn payroll(admin: &Context, allow_direct: bool) -> stream::Stream {
    let payroll = admin
        .create_stream(stream::Config {
            name: "PAYROLL".into(),
            subjects: vec!["payroll.>".into()],
            allow_direct,
            ..Default::default()
        })
        .await
        .unwrap();
    payroll
        .create_consumer(consumer::pull::Config {
            durable_name: Some("payroll-worker".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    payroll
}

/// `$JS.API.<rest>`.
fn api(rest: &str) -> String {
    format!("$JS.API.{rest}")
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
    let (stack, _a, admin) = orders_stack().await;
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
    let (stack, _a, admin) = orders_stack().await;
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
    let (stack, _a, _admin) = orders_stack().await;
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
    let (stack, _a, admin) = orders_stack().await;
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
        "$KV.config.theme",
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
        "$KV.profiles.bob.email",
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
        nats_oidc_client::inbox::of_token(&token).unwrap()
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

/// A stream or a consumer: what a JetStream subscription serves.
#[derive(Debug, PartialEq)]
enum Target {
    Stream(String),
    Consumer(String, String),
    /// nats-server's API dispatcher (`$JS.API.>`), which reads the stream
    /// and consumer from fixed tokens of the subject it is sent.
    Api,
}

/// Whom nats-server routes a subscription's messages to, read from the
/// subject the way consumer.go and stream.go write their subscriptions.
fn owner(subject: &str, stream_subjects: &[(&str, &str)]) -> Option<Target> {
    let t: Vec<&str> = subject.split('.').collect();
    let consumer = |s: usize, c: usize| Some(Target::Consumer(t[s].into(), t[c].into()));
    match t.as_slice() {
        ["$JS", "ACK", ..] if t.len() == 9 => consumer(2, 3),
        ["$JS", "ACK", ..] if t.len() >= 11 => consumer(4, 5),
        ["$JS", "FC", ..] if t.len() == 5 => consumer(2, 3),
        ["$JS", "FC", ..] if t.len() == 7 => consumer(4, 5),
        ["$JS", "API", ">"] => Some(Target::Api),
        ["$JS", "API", "CONSUMER", "MSG", "NEXT", _, _] => consumer(5, 6),
        ["$JS", "API", "CONSUMER", "RESET", _, _] => consumer(4, 5),
        ["$JS", "API", "DIRECT", "GET", s, ..] => Some(Target::Stream(s.to_string())),
        ["$KV", bucket, ">"] => Some(Target::Stream(format!("KV_{bucket}"))),
        _ => stream_subjects
            .iter()
            .find(|(subjects, _)| *subjects == subject)
            .map(|(_, stream)| Target::Stream(stream.to_string())),
    }
}

/// Class: a compiled subject never reaches a server-side subscription of
/// another stream, consumer or bucket, under any layout nats-server listens
/// on (v1 and v2 acks and flow control, pull requests, direct get, KV,
/// stream subjects). The subscriptions are nats-server's own, listed by the
/// system account for the account holding the streams, with several
/// streams, pull and push consumers and buckets side by side.
#[tokio::test]
async fn every_grant_reaches_only_its_own_targets_subscriptions() {
    use nats_oidc_callout::policy::overlaps;
    use nats_oidc_callout::policy::{
        account_hash, Consumer, JetStreamGrant, JsHome, KvGrant, KvScope,
    };
    let (stack, _a, admin) = orders_stack().await;
    fixtures::buckets(&admin).await;
    let payroll = payroll(&admin, true).await;
    payroll
        .create_consumer(consumer::push::Config {
            durable_name: Some("pusher".into()),
            deliver_subject: "deliveries.payroll".into(),
            flow_control: true,
            idle_heartbeat: Duration::from_secs(5),
            ..Default::default()
        })
        .await
        .unwrap();

    let data = stack.account_id("DATA");
    let system = stack.system_client().await;
    let answer = system
        .request(
            "$SYS.REQ.SERVER.PING.SUBSZ",
            serde_json::json!({"account": data, "subscriptions": true, "limit": 100000})
                .to_string()
                .into(),
        )
        .await
        .expect("SUBSZ answers");
    let subsz: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    let subscriptions: Vec<String> = subsz["data"]["subscriptions_list"]
        .as_array()
        .unwrap_or_else(|| panic!("{subsz}"))
        .iter()
        .map(|s| s["subject"].as_str().unwrap().to_string())
        .collect();
    for layout in [
        "$JS.ACK.PAYROLL.payroll-worker.*.*.*.*.*",
        "$JS.FC.PAYROLL.pusher.*",
        "$JS.API.CONSUMER.MSG.NEXT.PAYROLL.payroll-worker",
        "$KV.profiles.>",
    ] {
        assert!(
            subscriptions.iter().any(|s| s == layout),
            "nats-server no longer subscribes {layout}: {subscriptions:?}"
        );
    }
    let stream_subjects = [("orders.>", "ORDERS"), ("payroll.>", "PAYROLL")];

    // The grants as the account holding the streams sees them (users'
    // accounts import exactly these, under the API prefix).
    let home = JsHome {
        domain: "_".into(),
        account_hash: account_hash(&data),
    };
    let consumer = |s: &str, c: &str| Consumer {
        stream: s.into(),
        consumer: c.into(),
    };
    let js = |g: JetStreamGrant| -> Vec<String> {
        g.compile(&home).into_iter().map(|c| c.subject).collect()
    };
    let kv =
        |g: KvGrant| -> Vec<String> { g.compile(&home).into_iter().map(|c| c.subject).collect() };
    let scope = |bucket: &str, keys: Option<&str>| KvScope {
        bucket: bucket.into(),
        keys: keys.map(str::to_string),
    };
    let stream = |s: &str| Target::Stream(s.into());
    // Each grant kind alone on one stream (or consumer).
    let consume = |s: &str, c: &str| {
        js(JetStreamGrant {
            consume: vec![consumer(s, c)],
            ..Default::default()
        })
    };
    let on = |kind: &str, s: &str| {
        let names = vec![s.to_string()];
        js(match kind {
            "read" => JetStreamGrant {
                read: names,
                ..Default::default()
            },
            "replay" => JetStreamGrant {
                replay: names,
                ..Default::default()
            },
            _ => JetStreamGrant {
                manage: names,
                ..Default::default()
            },
        })
    };
    let grants: Vec<(&str, Target, Vec<String>)> = vec![
        (
            "consume ORDERS/worker",
            Target::Consumer("ORDERS".into(), "worker".into()),
            consume("ORDERS", "worker"),
        ),
        (
            "consume PAYROLL/pusher",
            Target::Consumer("PAYROLL".into(), "pusher".into()),
            consume("PAYROLL", "pusher"),
        ),
        ("read ORDERS", stream("ORDERS"), on("read", "ORDERS")),
        ("replay ORDERS", stream("ORDERS"), on("replay", "ORDERS")),
        ("manage ORDERS", stream("ORDERS"), on("manage", "ORDERS")),
        (
            "kv read config",
            stream("KV_config"),
            kv(KvGrant {
                read: vec![scope("config", None)],
                write: vec![],
            }),
        ),
        (
            "kv read and write profiles/{{sub}}.>",
            stream("KV_profiles"),
            kv(KvGrant {
                read: vec![scope("profiles", Some("{{sub}}.>"))],
                write: vec![scope("profiles", Some("{{sub}}.>"))],
            }),
        ),
    ];
    let mut reached_own = 0;
    for (grant, target, subjects) in &grants {
        for subject in subjects {
            for sub in subscriptions.iter().filter(|s| overlaps(subject, s)) {
                let owner = owner(sub, &stream_subjects);
                let own = match (&owner, target) {
                    (Some(Target::Api), _) => true,
                    (Some(o), t) if o == t => {
                        reached_own += 1;
                        true
                    }
                    (Some(Target::Consumer(s, _)), Target::Stream(t)) if s == t => true,
                    _ => false,
                };
                assert!(
                    own,
                    "{grant}: {subject} reaches {sub}, which serves {owner:?}, not {target:?}"
                );
            }
        }
    }
    assert!(
        reached_own >= grants.len(),
        "the grants reach their own targets' subscriptions ({reached_own})"
    );
}

/// The finding: a consume grant's ack subjects once admitted the 9-token
/// v1 ack subject of another stream's consumer, whose `+NXT` pull
/// delivered that stream's messages. Now the publish is refused and
/// nothing arrives.
#[tokio::test]
async fn an_ack_subject_of_another_consumer_is_refused() {
    let (stack, _a, admin) = orders_stack().await;
    payroll(&admin, false).await;
    admin
        .publish("payroll.jan", "salaries".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let (mut worker, _) = js_client(&stack, "wanda", &["worker"]).await;
    let inbox = worker.client.new_inbox();
    let mut replies = worker.client.subscribe(inbox.clone()).await.unwrap();
    server_has_read(&worker.client).await;
    let forged = "$JS.ACK.PAYROLL.payroll-worker.ORDERS.worker.1.1.1";
    worker
        .client
        .publish_with_reply(forged, inbox, "+NXT {\"batch\":3}".into())
        .await
        .unwrap();
    worker.client.flush().await.unwrap();
    assert!(
        worker
            .wait_event(
                &format!("permissions violation for publish to \"{forged}\""),
                Duration::from_secs(3)
            )
            .await,
        "{:?}",
        worker.events()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), replies.next())
            .await
            .is_err(),
        "no PAYROLL message arrives"
    );
    let info = admin
        .get_consumer_from_stream::<consumer::pull::Config, _, _>("payroll-worker", "PAYROLL")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.delivered.stream_sequence, 0, "nothing was delivered");
}

/// Every grant kind's requests, each with its answer redirected (reply-to)
/// into another user's key, another bucket, a stream's subject, the grants
/// bucket, a JetStream API call and a service's subject. JetStream publishes the answers with
/// its own rights, so subject permissions cannot stop them; in the
/// recommended layout nats-server answers an imported request on a reply
/// of its own in DATA and maps it back, so every answer lands in APP (seen
/// there by a subscriber) and none is stored in DATA or AUTH.
#[tokio::test]
async fn redirected_answers_land_only_in_the_users_own_account() {
    let stack = Stack::start(ServiceOptions {
        jetstream: true,
        roles: format!(
            "{}\n[grants]\nkv_bucket = \"callout-grants\"\n",
            fixtures::GRANT_ROLES
        ),
        ..ServiceOptions::default()
    })
    .await;
    let (data_admin, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::orders(&admin).await;
    fixtures::buckets(&admin).await;
    let (app_admin, _) = js_client(&stack, "appie", &["app-admin"]).await;
    let targets = [
        "$KV.profiles.bob.email",
        "$JS.API.STREAM.PURGE.ORDERS",
        "$KV.config.theme",
        "orders.redirected",
        "$KV.callout-grants.default.ana",
        "billing.charge",
    ];
    let mut seen_in_app = Vec::new();
    for t in targets {
        seen_in_app.push(app_admin.client.subscribe(t.to_string()).await.unwrap());
    }
    server_has_read(&app_admin.client).await;
    let mut billing_in_data = data_admin.client.subscribe("billing.charge").await.unwrap();
    server_has_read(&data_admin.client).await;

    let bob_before = admin
        .get_key_value("profiles")
        .await
        .unwrap()
        .entry("bob.email")
        .await
        .unwrap()
        .unwrap()
        .revision;
    let (ana, ana_js) = js_client(&stack, "ana", &["profile"]).await;
    ana_js
        .get_key_value("profiles")
        .await
        .unwrap()
        .put("ana.email", "ana@example.com".into())
        .await
        .expect("its own put works");
    let (rita, _) = js_client(&stack, "rita", &["reader"]).await;
    let (wanda, _) = js_client(&stack, "wanda", &["worker"]).await;
    let (remy, _) = js_client(&stack, "remy", &["replayer"]).await;
    let (olga, _) = js_client(&stack, "olga", &["ops"]).await;
    let own_get = api("DIRECT.GET.KV_profiles.$KV.profiles.ana.email");
    // (who, request subject, body, where its answer is sent)
    let redirects: Vec<(&TestClient, String, &str, &str)> = vec![
        // kv read: into another user's key, another bucket, the grants bucket
        (&ana, own_get.clone(), "", targets[0]),
        (&ana, own_get.clone(), "", targets[1]),
        (&ana, own_get.clone(), "", targets[2]),
        (&ana, own_get.clone(), "", targets[4]),
        // kv write: the put's acknowledgement
        (&ana, "$KV.profiles.ana.note".into(), "x", targets[0]),
        // read: stream info into a stream's subject and a key
        (&rita, api("STREAM.INFO.ORDERS"), "", targets[3]),
        (&rita, api("STREAM.INFO.ORDERS"), "", targets[0]),
        // consume: a pull whose messages go to a service's subject
        (
            &wanda,
            api("CONSUMER.MSG.NEXT.ORDERS.worker"),
            "{\"batch\":1}",
            targets[5],
        ),
        // replay: a consumer create's answer
        (
            &remy,
            api("CONSUMER.CREATE.ORDERS"),
            "{\"stream_name\":\"ORDERS\",\"config\":{\"ack_policy\":\"none\"}}",
            targets[2],
        ),
        // manage: its stream's info (an error: there is none)
        (&olga, api("STREAM.INFO.SCRATCH"), "", targets[0]),
    ];
    for (client, subject, body, reply) in &redirects {
        client
            .client
            .publish_with_reply(subject.clone(), reply.to_string(), body.to_string().into())
            .await
            .unwrap();
        client.client.flush().await.unwrap();
    }
    // Answers arrive in APP, where the user is: the redirects ran. (On
    // subjects APP imports from DATA, nats-server 2.11+ drops a redirected
    // answer and 2.10 delivers it in APP; either way it goes no further.)
    let imported = ["$KV.profiles.", "$JS.API.", "orders."];
    for (t, sub) in targets.iter().zip(seen_in_app.iter_mut()) {
        if imported.iter().any(|i| t.starts_with(i)) {
            continue;
        }
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
        assert!(
            matches!(got, Ok(Some(_))),
            "no redirected answer arrived on {t} in APP"
        );
    }
    // None was stored, in DATA or in AUTH, and none reached DATA's service.
    let profiles = admin.get_key_value("profiles").await.unwrap();
    let bob = profiles.entry("bob.email").await.unwrap().unwrap();
    assert_eq!(
        (&bob.value[..], bob.revision),
        (&b"bob@example.com"[..], bob_before)
    );
    let config = admin.get_key_value("config").await.unwrap();
    let theme = config.entry("theme").await.unwrap().unwrap();
    assert_eq!(&theme.value[..], b"dark");
    let mut orders = admin.get_stream("ORDERS").await.unwrap();
    assert_eq!(orders.info().await.unwrap().state.messages, 2);
    let auth = jetstream::new(stack.callout_account_client().await);
    let grants = auth.get_key_value("callout-grants").await.unwrap();
    assert_eq!(grants.get("default.ana").await.unwrap(), None);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), billing_in_data.next())
            .await
            .is_err(),
        "DATA's billing service saw nothing"
    );
}

/// With `jetstream.same_account`, the streams live where the users are: the
/// same redirects are stored (what `check` warns about with the true reach
/// of each grant). This pins nats-server's behaviour behind that warning.
#[tokio::test]
async fn in_the_same_account_a_redirect_writes_into_any_bucket_and_check_says_so() {
    let roles = fixtures::GRANT_ROLES
        .replace(
            "account = \"DATA\"\nstream_subjects = [\"orders.>\"]",
            "account = \"APP\"\nsame_account = true",
        )
        .replace("[roles.admin]\naccount = \"DATA\"", "[roles.admin]");
    let stack = Stack::start(ServiceOptions {
        jetstream: true,
        roles,
        ..ServiceOptions::default()
    })
    .await;
    let (_a, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::buckets(&admin).await;
    let client = connect(&stack.url(), &stack.token("ana", &["profile"]))
        .await
        .unwrap();
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client.client.clone());
    js.get_key_value("profiles")
        .await
        .unwrap()
        .put("ana.email", "ana@example.com".into())
        .await
        .unwrap();
    client
        .client
        .publish_with_reply(
            "$JS.API.DIRECT.GET.KV_profiles.$KV.profiles.ana.email",
            "$KV.profiles.bob.email",
            "".into(),
        )
        .await
        .unwrap();
    client.client.flush().await.unwrap();
    let profiles = admin.get_key_value("profiles").await.unwrap();
    let mut overwritten = false;
    for _ in 0..50 {
        if profiles.get("bob.email").await.unwrap().as_deref() == Some(&b"ana@example.com"[..]) {
            overwritten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(overwritten, "the redirect stored ana's value as bob's");

    let config = stack.service.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        callout_bin()
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let t = output_text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("roles.profile: \"$JS.API.DIRECT.GET.KV_profiles.$KV.profiles.{{name}}.>\" (get these keys) is granted in \"APP\", the account holding the streams (jetstream.same_account): JetStream will publish its answers, and the messages it serves, to any subject of the account the user names"),
        "{t}"
    );
    // Without the opt-in, the same config is refused.
    let text = std::fs::read_to_string(&stack.service.config)
        .unwrap()
        .replace("same_account = true", "");
    std::fs::write(&stack.service.config, text).unwrap();
    let config = stack.service.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        callout_bin()
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let t = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("the account holding the streams (jetstream.account): JetStream publishes its answers to any subject a user names"),
        "{t}"
    );
}

/// nats-server 2.14+ can write v2 ack and flow-control subjects
/// (`$JS.ACK.<domain>.<account hash>.<stream>.<consumer>...`, behind its
/// `js_ack_fc_v2` feature flag): the consume grant's v2 forms, pinned to
/// the domain and the hash of the account holding the streams, serve them
/// through the import.
#[tokio::test]
async fn consume_acks_in_the_v2_layout() {
    if nats_server_version() < (2, 14, 0) {
        println!(
            "NOTICE: nats-server {:?} has no v2 ack subjects; skipped",
            nats_server_version()
        );
        return;
    }
    let stack = Stack::start(ServiceOptions {
        jetstream: true,
        roles: fixtures::GRANT_ROLES.into(),
        nats_extra: "feature_flags { js_ack_fc_v2: true }".into(),
        ..ServiceOptions::default()
    })
    .await;
    let (_a, admin) = js_client(&stack, "root", &["admin"]).await;
    fixtures::orders(&admin).await;
    let (_c, js) = js_client(&stack, "ana", &["worker"]).await;
    let worker: consumer::PullConsumer = js
        .get_consumer_from_stream("worker", "ORDERS")
        .await
        .unwrap();
    let mut batch = worker
        .fetch()
        .max_messages(2)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let hash = nats_oidc_callout::policy::account_hash(&stack.account_id("DATA"));
    let mut got = 0;
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        let reply = m.reply.clone().unwrap().to_string();
        assert!(
            reply.starts_with(&format!("$JS.ACK._.{hash}.ORDERS.worker.")),
            "{reply}"
        );
        m.double_ack().await.expect("the v2 ack is confirmed");
        got += 1;
    }
    assert_eq!(got, 2);
    let info = admin
        .get_consumer_from_stream::<consumer::pull::Config, _, _>("worker", "ORDERS")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.ack_floor.stream_sequence, 2);
}

/// `{{inbox}}`: each user's replies, request/reply and JetStream alike, come
/// to a prefix only that user may subscribe to. Another user of the same
/// role is refused it (and `_INBOX.>`), and a client that keeps the default
/// inbox gets no answer at all rather than a shared one.
#[tokio::test]
async fn a_private_inbox_gets_its_answers_and_no_other_user_can_subscribe_to_it() {
    let (stack, _a, _admin) = orders_stack().await;
    let service = connect(&stack.url(), &stack.token("svc", &["service"]))
        .await
        .unwrap();
    let mut requests = service.client.subscribe("svc.echo").await.unwrap();
    tokio::spawn({
        let client = service.client.clone();
        async move {
            while let Some(m) = requests.next().await {
                if let Some(reply) = m.reply {
                    let _ = client.publish(reply, "pong".into()).await;
                }
            }
        }
    });
    server_has_read(&service.client).await;

    let ana_token = stack.token("ana", &["requester", "reader"]);
    let ana_inbox = nats_oidc_client::inbox::of_token(&ana_token).unwrap();
    let ana = connect(&stack.url(), &ana_token).await.unwrap();
    let (mut bob, _) = js_client(&stack, "bob", &["requester"]).await;
    let mut eavesdrop = Vec::new();
    for subject in [format!("{ana_inbox}.>"), "_INBOX.>".to_string()] {
        eavesdrop.push(bob.client.subscribe(subject.clone()).await.unwrap());
        assert!(
            bob.wait_event(
                &format!("permissions violation for subscription to \"{subject}\""),
                Duration::from_secs(3)
            )
            .await,
            "{subject}: {:?}",
            bob.events()
        );
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(3),
        ana.client.request("svc.echo", "ping".into()),
    )
    .await
    .expect("answered")
    .expect("answered");
    assert_eq!(&answer.payload[..], b"pong");
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(ana.client.clone());
    let mut orders = js.get_stream("ORDERS").await.expect("a JetStream answer");
    assert_eq!(orders.info().await.unwrap().state.messages, 2);
    for sub in eavesdrop.iter_mut() {
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sub.next())
                .await
                .map_or(true, |m| m.is_none()),
            "bob read one of ana's answers"
        );
    }

    // The default inbox is nobody's: no answer comes.
    let mut plain = connect_with(
        &stack.url(),
        base_options(&stack.url())
            .await
            .user_and_password("anything".into(), ana_token.clone()),
    )
    .await
    .unwrap();
    let unanswered = tokio::time::timeout(
        Duration::from_secs(2),
        plain.client.request("svc.echo", "ping".into()),
    )
    .await;
    assert!(!matches!(unanswered, Ok(Ok(_))), "{unanswered:?}");
    assert!(
        plain
            .wait_event(
                "permissions violation for subscription to \"_inbox.",
                Duration::from_secs(3)
            )
            .await,
        "{:?}",
        plain.events()
    );
}

/// `check --online` with a system-account login compares nats-server's
/// imports with what the grants need: the stack's (from `accounts`) pass,
/// and a grant added to the config without its import is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_compares_the_servers_imports_with_the_grants() {
    let stack = stack().await;
    // In operator mode nats-server loads an account when it is first used.
    let _worker = js_client(&stack, "wanda", &["worker"]).await;
    let run = |config: std::path::PathBuf| {
        let creds = stack.system_creds();
        tokio::task::spawn_blocking(move || {
            let mut cmd = callout_bin();
            cmd.args(["check", "--online", "--config"]).arg(&config);
            match creds {
                Some(c) => {
                    cmd.arg("--system-creds").arg(c);
                }
                None => {
                    cmd.args(["--system-user", "sys"])
                        .env("NATS_OIDC_CALLOUT_SYSTEM_PASSWORD", "sys");
                }
            }
            cmd.output().unwrap()
        })
    };
    let out = run(stack.service.config.clone()).await.unwrap();
    let t = output_text(&out);
    assert!(
        t.contains("ok: account APP imports what its users' grants need from DATA"),
        "{t}"
    );
    assert!(!t.contains("lacks imports"), "{t}");

    let drifted = stack.service.config.with_file_name("drifted.toml");
    let text = std::fs::read_to_string(&stack.service.config).unwrap()
        + "\n[roles.notes]\nsub.allow = [\"{{inbox}}.>\"]\nkv.write = [\"notes/{{name}}.>\"]\n";
    std::fs::write(&drifted, text).unwrap();
    let out = run(drifted).await.unwrap();
    let t = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("error: account APP lacks imports from DATA that its users' grants need: service $KV.notes.*.>"),
        "{t}"
    );
}
