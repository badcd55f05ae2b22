//! What a role says beyond subjects, against a real nats-server: replies
//! (`resp`), connection types, source networks, connect windows, a role's
//! `max_user_ttl`, and user limits, with async-nats over TCP and websocket.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures::StreamExt;

/// The time of day `offset` seconds from now, in UTC, as a role writes it.
fn clock_in(offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let s = (now + offset).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn roles() -> String {
    format!(
        r#"
[roles.requester]
pub.allow = ["svc.>"]
sub.allow = ["_INBOX.>"]

[roles.service]
sub.allow = ["svc.echo"]
resp = {{ max = 1, ttl = "1m" }}

[roles.quick-service]
sub.allow = ["svc.quick"]
resp = {{ ttl = "1s" }}

[roles.mute-service]
sub.allow = ["svc.mute"]

[roles.browser]
pub.allow = ["web.>"]
sub.allow = ["web.>", "_INBOX.>"]
connection.types = ["WEBSOCKET"]

[roles.office]
pub.allow = ["net.>"]
connection.sources = ["10.0.0.0/8"]

[roles.local]
pub.allow = ["net.>"]
sub.allow = ["net.>"]
connection.sources = ["127.0.0.0/8", "::1/128"]

[roles.later]
pub.allow = ["time.>"]
connection.times = [{{ start = "{later_start}", end = "{later_end}" }}]

[roles.closing]
pub.allow = ["time.>"]
sub.allow = ["time.>"]
connection.times = [{{ start = "{closing_start}", end = "{closing_end}" }}]

[roles.brief]
pub.allow = ["brief.>"]
sub.allow = ["brief.>"]
max_user_ttl = "3s"

[roles.limited]
pub.allow = ["lim.>"]
sub.allow = ["lim.>"]
limits = {{ subs = 1, payload = "16B", data = "1KiB" }}

[roles.limited-more]
pub.allow = ["lim.>"]
limits = {{ subs = 5, payload = 8 }}
"#,
        later_start = clock_in(2 * 3600),
        later_end = clock_in(3 * 3600),
        closing_start = clock_in(-3600),
        closing_end = clock_in(5),
    )
}

async fn stack() -> Stack {
    Stack::start(ServiceOptions {
        websocket: true,
        roles: roles(),
        ..ServiceOptions::default()
    })
    .await
}

#[tokio::test]
async fn resp_answers_each_request_once_and_nothing_else_on_inbox() {
    let stack = stack().await;
    let requester = connect(&stack.url(), &stack.token("rob", &["requester"]))
        .await
        .unwrap();
    let mut service = connect(&stack.url(), &stack.token("sam", &["service"]))
        .await
        .unwrap();
    let mut requests = service.client.subscribe("svc.echo").await.unwrap();
    server_has_read(&service.client).await;

    let mut replies = requester.client.subscribe("_INBOX.rob.1").await.unwrap();
    server_has_read(&requester.client).await;
    requester
        .client
        .publish_with_reply("svc.echo", "_INBOX.rob.1", "ping".into())
        .await
        .unwrap();
    let request = tokio::time::timeout(Duration::from_secs(3), requests.next())
        .await
        .expect("the service gets the request")
        .unwrap();
    let reply_to = request.reply.clone().expect("a reply subject");
    service
        .client
        .publish(reply_to.clone(), "pong".into())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(3), replies.next())
        .await
        .expect("the reply arrives")
        .unwrap();
    assert_eq!(&first.payload[..], b"pong");

    // max = 1: a second reply to the same request is refused.
    service
        .client
        .publish(reply_to.clone(), "again".into())
        .await
        .unwrap();
    assert!(
        service
            .wait_event(
                "permissions violation for publish to \"_inbox.rob.1\"",
                Duration::from_secs(3)
            )
            .await,
        "a second reply was not refused: {:?}",
        service.events()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), replies.next())
            .await
            .is_err(),
        "the second reply arrived"
    );
    // No publish right on inboxes it was not asked to answer.
    assert!(
        not_delivered(&service.client, &requester.client, "_INBOX.rob.forged").await,
        "the service could write to an inbox it got no request from"
    );

    // The request/reply helper works as clients use it.
    let echo = tokio::spawn({
        let client = service.client.clone();
        async move {
            let m = requests.next().await.unwrap();
            client.publish(m.reply.unwrap(), m.payload).await.unwrap();
        }
    });
    let answer = requester
        .client
        .request("svc.echo", "hello".into())
        .await
        .expect("request answered");
    assert_eq!(&answer.payload[..], b"hello");
    echo.await.unwrap();
}

#[tokio::test]
async fn resp_ends_at_its_ttl_and_without_resp_nothing_can_answer() {
    let stack = stack().await;
    let requester = connect(&stack.url(), &stack.token("rob", &["requester"]))
        .await
        .unwrap();
    for (role, subject, wait) in [
        ("quick-service", "svc.quick", Duration::from_millis(1500)),
        ("mute-service", "svc.mute", Duration::ZERO),
    ] {
        let mut service = connect(&stack.url(), &stack.token("sam", &[role]))
            .await
            .unwrap();
        let mut requests = service.client.subscribe(subject).await.unwrap();
        server_has_read(&service.client).await;
        let inbox = format!("_INBOX.rob.{role}");
        let mut replies = requester.client.subscribe(inbox.clone()).await.unwrap();
        server_has_read(&requester.client).await;
        requester
            .client
            .publish_with_reply(subject, inbox.clone(), "ping".into())
            .await
            .unwrap();
        let request = tokio::time::timeout(Duration::from_secs(3), requests.next())
            .await
            .expect("the request arrives")
            .unwrap();
        tokio::time::sleep(wait).await;
        service
            .client
            .publish(request.reply.unwrap(), "late".into())
            .await
            .unwrap();
        assert!(
            service
                .wait_event(
                    &format!(
                        "permissions violation for publish to \"{}\"",
                        inbox.to_lowercase()
                    ),
                    Duration::from_secs(3)
                )
                .await,
            "{role}: the reply was not refused: {:?}",
            service.events()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), replies.next())
                .await
                .is_err(),
            "{role}: the reply arrived"
        );
    }
}

#[tokio::test]
async fn a_websocket_only_role_is_refused_over_tcp_and_admitted_over_websocket() {
    let stack = stack().await;
    let token = stack.token("wes", &["browser"]);
    assert_refused_as(
        &stack,
        "connection_type",
        "browser over TCP",
        connect(&stack.url(), &token),
    )
    .await;
    let log = stack.service.log_text();
    assert!(
        log.contains("role browser admits WEBSOCKET connections, this one is STANDARD"),
        "{log}"
    );
    let browser = connect(&stack.nats.ws_url(), &token)
        .await
        .expect("admitted over websocket");
    let peer = connect(&stack.nats.ws_url(), &stack.token("pam", &["browser"]))
        .await
        .unwrap();
    assert!(delivered(&browser.client, &peer.client, "web.hello").await);
    // A role without connection rules connects over either.
    let requester = stack.token("rob", &["requester"]);
    connect(&stack.url(), &requester).await.unwrap();
    connect(&stack.nats.ws_url(), &requester).await.unwrap();
}

#[tokio::test]
async fn a_source_range_without_the_client_is_refused() {
    let stack = stack().await;
    assert_refused_as(
        &stack,
        "connection_source",
        "office network only",
        connect(&stack.url(), &stack.token("otto", &["office"])),
    )
    .await;
    assert!(stack
        .service
        .log_text()
        .contains("role office admits connections from 10.0.0.0/8, this one comes from 127.0.0.1"));
    // Local alone is admitted (that every role's rules must hold, local
    // with office, is decided in `decisions.rs`).
    let local = connect(&stack.url(), &stack.token("lou", &["local"]))
        .await
        .expect("loopback is in 127.0.0.0/8");
    let peer = connect(&stack.url(), &stack.token("lia", &["local"]))
        .await
        .unwrap();
    assert!(delivered(&local.client, &peer.client, "net.x").await);
}

#[tokio::test]
async fn a_connect_window_excluding_now_is_refused_and_a_closing_one_ends_the_connection() {
    let stack = stack().await;
    assert_refused_as(
        &stack,
        "connection_time",
        "a window two hours from now",
        connect(&stack.url(), &stack.token("tim", &["later"])),
    )
    .await;

    let mut jwts = stack.watch_user_jwts().await;
    let mut closing = connect(&stack.url(), &stack.token("tia", &["closing"]))
        .await
        .expect("inside the window");
    let claims = jwts.next_for("tia").await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(
        exp <= now + 6,
        "the user JWT ends where the window closes: exp {exp}, now {now}"
    );
    assert_eq!(claims["nats"]["times_location"], "UTC");
    // The window written for nats-server is the role's: it closes at the
    // JWT's end (an overnight window is written as two, both still ending
    // there or at midnight).
    let s = exp % 86_400;
    let closes = format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    let times = claims["nats"]["times"].as_array().expect("times");
    assert!(
        times.iter().any(|w| w["end"] == closes.as_str()),
        "no window ends at {closes}: {claims}"
    );
    assert!(times.len() <= 2, "{claims}");
    assert!(
        closing.wait_event("expired", Duration::from_secs(10)).await,
        "the connection outlived its window: {:?}",
        closing.events()
    );
}

#[tokio::test]
async fn max_user_ttl_of_a_role_ends_the_connection() {
    let stack = stack().await;
    let mut jwts = stack.watch_user_jwts().await;
    let started = std::time::Instant::now();
    let mut brief = connect(&stack.url(), &stack.token("bea", &["brief", "requester"]))
        .await
        .unwrap();
    let claims = jwts.next_for("bea").await;
    let iat = claims["iat"].as_u64().unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp - iat <= 3, "the shortest ttl wins: {claims}");
    assert!(
        brief.wait_event("expired", Duration::from_secs(8)).await,
        "still connected: {:?}",
        brief.events()
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
}

/// nats-server 2.15.1 (and 2.10) clear the user JWT of a callout user
/// before they would read its limits, in server and operator mode alike:
/// the limits travel in the JWT (for auditing, and for a server that reads
/// them) but are not enforced. The book says so (docs/src/guides/roles.md,
/// "Limits"); if this test fails, nats-server has started enforcing them,
/// and the book must say that.
#[tokio::test]
async fn limits_are_in_the_user_jwt_and_nats_server_does_not_apply_them() {
    let stack = stack().await;
    let mut jwts = stack.watch_user_jwts().await;
    let limited = connect(
        &stack.url(),
        &stack.token("lim", &["limited", "limited-more"]),
    )
    .await
    .unwrap();
    let claims = jwts.next_for("lim").await;
    let nats = &claims["nats"];
    assert_eq!(nats["subs"], 1, "the smallest limit wins: {claims}");
    assert_eq!(nats["payload"], 8);
    assert_eq!(nats["data"], 1024);

    let unlimited = connect(&stack.url(), &stack.token("rob", &["requester"]))
        .await
        .unwrap();
    let n = jwts.next_for("rob").await["nats"].clone();
    assert_eq!(n["subs"], -1, "no limit is -1, not an omitted 0");
    assert_eq!(n["payload"], -1);
    assert_eq!(n["data"], -1);
    drop(unlimited);

    let peer = connect(&stack.url(), &stack.token("lia", &["limited"]))
        .await
        .unwrap();
    let _first = limited.client.subscribe("lim.a").await.unwrap();
    let mut second = limited.client.subscribe("lim.b").await.unwrap();
    server_has_read(&limited.client).await;
    let big = "x".repeat(100);
    peer.client
        .publish("lim.b", big.clone().into())
        .await
        .unwrap();
    peer.client.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(3), second.next()).await;
    assert!(
        matches!(got, Ok(Some(ref m)) if m.payload.len() == 100),
        "nats-server now applies user limits to callout users (a second subscription or a \
         100-byte message was refused): update \
         docs/src/guides/roles.md's Limits paragraph and this test"
    );
}
