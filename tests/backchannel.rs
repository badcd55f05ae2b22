//! OpenID Connect back-channel logouts POSTed to the running service, as
//! an identity provider sends them: `[revocation] backchannel_listen` on
//! a loopback port of its own, logout tokens from the development issuer.
//! What each bad token is refused for is decided in-process
//! (`oidc/logout/tests.rs`); here, the answers on the wire, the log line
//! and the metric.

mod common;

use common::*;
use serde_json::Value;

/// Logouts are addressed to the portal, not to the access tokens' `nats`.
const LOGOUT_AUDIENCE: &str = "portal";

async fn stack() -> Stack {
    Stack::start(ServiceOptions {
        http_port: Some(0),
        jetstream: true,
        extra_oidc: format!("logout_audience = \"{LOGOUT_AUDIENCE}\"\n"),
        revocation: "kv_bucket = \"revocations\"\nbackchannel_listen = \"127.0.0.1:0\"".into(),
        ..ServiceOptions::default()
    })
    .await
}

fn endpoint(stack: &Stack, path: &str) -> String {
    format!(
        "http://127.0.0.1:{}{path}",
        stack.service.backchannel_port()
    )
}

/// POSTs `body` as a form to `/backchannel-logout`.
async fn post_form(stack: &Stack, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(endpoint(stack, "/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("the endpoint answers")
}

async fn post_token(stack: &Stack, token: &str) -> reqwest::Response {
    post_form(stack, format!("logout_token={token}")).await
}

fn no_store(r: &reqwest::Response) {
    assert_eq!(
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "{r:?}"
    );
}

/// A 400 with the spec's error object; returns its description.
async fn refused(r: reqwest::Response, token: &str) -> String {
    assert_eq!(r.status(), 400);
    no_store(&r);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    let description = body["error_description"].as_str().unwrap().to_string();
    assert!(!description.contains(token), "the token echoed: {body}");
    description
}

async fn metric(stack: &Stack, outcome: &str, issuer: &str) -> u64 {
    let (status, text) = http_get(stack.service.http_port(), "/metrics").await;
    assert_eq!(status, 200);
    let series = format!(
        "nats_oidc_callout_backchannel_logouts_total{{issuer=\"{issuer}\",outcome=\"{outcome}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_logout_is_accepted_once_and_bad_ones_get_400() {
    let stack = stack().await;
    let issuer = &stack.issuer;

    let by_sub = issuer.logout_token(Some("user-ana"), None, LOGOUT_AUDIENCE);
    let r = post_token(&stack, &by_sub).await;
    assert_eq!(r.status(), 200);
    no_store(&r);
    let by_sid = issuer.logout_token(None, Some("session-7"), LOGOUT_AUDIENCE);
    assert_eq!(post_token(&stack, &by_sid).await.status(), 200);
    let both = issuer.logout_token(Some("user-bob"), Some("session-8"), LOGOUT_AUDIENCE);
    assert_eq!(post_token(&stack, &both).await.status(), 200);

    // The same token again is a replay: never acted on twice.
    let description = refused(post_token(&stack, &by_sub).await, &by_sub).await;
    assert!(description.contains("received before"), "{description}");

    let other_issuer = nats_oidc_callout::dev::DevIssuer::start(0).await.unwrap();
    let mut with_nonce = issuer.logout_claims(Some("user-ana"), None, LOGOUT_AUDIENCE);
    with_nonce["nonce"] = "n".into();
    let mut no_events = issuer.logout_claims(Some("user-ana"), None, LOGOUT_AUDIENCE);
    no_events.as_object_mut().unwrap().remove("events");
    let mut expired = issuer.logout_claims(Some("user-ana"), None, LOGOUT_AUDIENCE);
    expired["exp"] = 1000.into();
    expired["iat"] = 900.into();
    let good = issuer.logout_token(Some("user-ana"), None, LOGOUT_AUDIENCE);
    let (head, _) = good.rsplit_once('.').unwrap();
    let bad = [
        (
            "the access tokens' audience",
            issuer.logout_token(Some("user-ana"), None, AUDIENCE),
            "oidc.logout_audience",
        ),
        (
            "an issuer not configured",
            other_issuer.logout_token(Some("user-ana"), None, LOGOUT_AUDIENCE),
            "is not a configured issuer",
        ),
        (
            "another signature",
            format!("{head}.{}", by_sid.rsplit_once('.').unwrap().1),
            "signature does not verify",
        ),
        (
            "no events",
            issuer.sign_logout(&no_events),
            "no events claim",
        ),
        ("a nonce", issuer.sign_logout(&with_nonce), "nonce"),
        ("expired", issuer.sign_logout(&expired), "expired"),
        (
            "an access token",
            stack.token("ana", &["admin"]),
            "not accepted (logout+jwt)",
        ),
    ];
    for (what, token, reason) in &bad {
        let description = refused(post_token(&stack, token).await, token).await;
        assert!(description.contains(reason), "{what}: {description}");
        // Whoever can reach the endpoint learns nothing of the config.
        assert!(
            !description.contains(&issuer.issuer()),
            "{what}: {description}"
        );
    }

    // One line per logout; the tokens never in the log.
    let log = stack.service.log_text();
    assert_eq!(log.matches("result=\"accepted\"").count(), 3, "{log}");
    assert!(
        log.lines().any(|l| l.contains("result=\"accepted\"")
            && l.contains("issuer=default")
            && l.contains("sub=user-bob")
            && l.contains("sid=session-8")),
        "{log}"
    );
    assert_eq!(log.matches("result=\"replayed\"").count(), 1, "{log}");
    assert_eq!(
        log.matches("result=\"refused\"").count(),
        bad.len(),
        "{log}"
    );
    for token in [&by_sub, &by_sid, &both, &good]
        .into_iter()
        .chain(bad.iter().map(|(_, t, _)| t))
    {
        let signature = token.rsplit_once('.').unwrap().1;
        assert!(!log.contains(signature), "a token in the log:\n{log}");
    }

    assert_eq!(metric(&stack, "accepted", "default").await, 3);
    assert_eq!(metric(&stack, "replayed", "default").await, 1);
    assert_eq!(
        metric(&stack, "refused", "default").await,
        bad.len() as u64 - 1
    );
    // The token's own iss is never a label value.
    assert_eq!(metric(&stack, "refused", "(unknown)").await, 1);
    let (_, text) = http_get(stack.service.http_port(), "/metrics").await;
    assert!(!text.contains(&other_issuer.issuer()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_form_post_to_its_path_is_served_and_it_stops_with_the_service() {
    let mut stack = stack().await;
    let client = reqwest::Client::new();

    let get = client
        .get(endpoint(&stack, "/backchannel-logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    for path in ["/metrics", "/healthz", "/", "/backchannel-logout/x"] {
        let r = client.get(endpoint(&stack, path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }

    let token = stack
        .issuer
        .logout_token(Some("user-ana"), None, LOGOUT_AUDIENCE);
    let json = client
        .post(endpoint(&stack, "/backchannel-logout"))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "logout_token": token }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 415);
    no_store(&json);
    let no_type = client
        .post(endpoint(&stack, "/backchannel-logout"))
        .body(format!("logout_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), 415);

    for (form, reason) in [
        ("state=1".to_string(), "no logout_token"),
        (
            format!("logout_token={token}&logout_token={token}"),
            "more than one logout_token",
        ),
        ("logout_token=".to_string(), "empty"),
    ] {
        let description = refused(post_form(&stack, form).await, &token).await;
        assert!(description.contains(reason), "{description}");
    }
    let huge = post_form(&stack, format!("logout_token={}", "a".repeat(80 * 1024))).await;
    assert_eq!(huge.status(), 413);

    // None of those used the token up.
    let r = post_form(&stack, format!("x=1&logout_token={token}")).await;
    assert_eq!(r.status(), 200);

    let status = stack.service.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        client
            .post(endpoint(&stack, "/backchannel-logout"))
            .send()
            .await
            .is_err(),
        "the endpoint still answers after the service stopped"
    );
}

/// The endpoint faces the provider's network: a client that never finishes
/// its request makes nobody wait, and is hung up on (after the header
/// read timeout, 10 s) rather than holding its connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_delays_nobody_and_is_hung_up_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = stack().await;
    let port = stack.service.backchannel_port();
    let mut slow = Vec::new();
    // Fewer than one source may hold (16): the logout below comes from
    // the same address.
    for _ in 0..10 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"POST /backchannel-logout HTTP/1.1\r\nHost: idp\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let token = stack
        .issuer
        .logout_token(Some("user-ana"), None, LOGOUT_AUDIENCE);
    assert_eq!(post_token(&stack, &token).await.status(), 200);
    for mut s in slow {
        // Closed: the end of the stream (after a 408, or nothing) or a
        // reset; what must not happen is waiting on for ever.
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut answer))
            .await
            .expect("the server hangs up on a client that never finishes its headers");
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// Connections to `listener` closed unserved for being over a cap.
async fn refused_connections(stack: &Stack, listener: &str) -> u64 {
    let (status, text) = http_get(stack.service.http_port(), "/metrics").await;
    assert_eq!(status, 200);
    let series =
        format!("nats_oidc_callout_http_connections_refused_total{{listener=\"{listener}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no {series}in\n{text}"))
}

/// Whoever can reach the endpoint can open connections that never send a
/// request; one source holding as many as it may (16), and asking for
/// more, keeps nobody else from being served. 127.0.0.2 is the greedy
/// source (any 127/8 address is local on Linux), the provider 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_holding_many_connections_cannot_keep_a_logout_out() {
    use tokio::io::AsyncWriteExt;
    const PER_SOURCE: u64 = 16;
    const OPENED: u64 = PER_SOURCE + 8;
    let stack = stack().await;
    let port = stack.service.backchannel_port();
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut greedy = Vec::new();
    for _ in 0..OPENED {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(server).await.unwrap();
        // The refused ones may be closed already: what is written to them
        // does not matter.
        let _ = s
            .write_all(b"POST /backchannel-logout HTTP/1.1\r\nHost: idp\r\n")
            .await;
        greedy.push(s);
    }
    // The service takes connections in turn: once it has counted the
    // last refused one, it has taken (and holds) the 16 before.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while refused_connections(&stack, "backchannel").await < OPENED - PER_SOURCE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connections over the cap were not counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let token = stack
        .issuer
        .logout_token(Some("user-ana"), None, LOGOUT_AUDIENCE);
    let answer = tokio::time::timeout(HANG_GUARD, post_token(&stack, &token))
        .await
        .expect("the logout is answered while another source holds its share");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        refused_connections(&stack, "backchannel").await,
        OPENED - PER_SOURCE
    );
    // The other listener counts on its own, from 0.
    assert_eq!(refused_connections(&stack, "http").await, 0);
    assert!(
        stack
            .service
            .log_text()
            .contains("connections closed unserved"),
        "the refusals are warned about"
    );
    drop(greedy);
}
