//! Revocation through a three-node nats-server cluster with clustered
//! JetStream (the revocation list's bucket lives on one of the nodes) and
//! two service replicas on different nodes, each with its own back-channel
//! endpoint and a system-account login: a logout received by either
//! replica closes the live connections it covers wherever they are and
//! whichever replica admitted them, and nothing else. Each scenario runs in
//! server (config) mode and in operator mode (system-account creds file).
//! What each bad logout token is refused for: `backchannel.rs` and
//! `oidc/logout/tests.rs`; here, that a refused one closes nothing.

mod common;

use std::time::Duration;

use common::cluster::ClusterStack;
use common::*;

const LOGOUT_AUDIENCE: &str = "portal";

/// Two issuers that both log out through the portal: `corp` (the stack's
/// development issuer) and `partner`, whose users carry the same names and
/// subjects (`user-<name>`), and roles without a namespace.
fn options(partner: &DevIssuer, operator: bool) -> ServiceOptions {
    let block = |name: &str, issuer: &str| {
        format!(
            r#"[[oidc]]
name = "{name}"
issuer = "{issuer}"
audience = "{AUDIENCE}"
logout_audience = "{LOGOUT_AUDIENCE}"
roles_claim = "realm_access.roles"
user_claim = "preferred_username"
role_namespace = ""
jwks_refetch_cooldown = "2s"
"#
        )
    };
    ServiceOptions {
        operator,
        jetstream: true,
        system_login: true,
        oidc: Some(format!(
            "{}\n{}",
            block("corp", "{dev_issuer}"),
            block("partner", &partner.issuer())
        )),
        revocation: "kv_bucket = \"revocations\"\nbackchannel_listen = \"127.0.0.1:0\"".into(),
        ..ServiceOptions::default()
    }
}

/// The cluster, with a replica on n0 and one on n1, each having loaded both
/// issuers' keys.
async fn start(partner: &DevIssuer, operator: bool) -> ClusterStack {
    let stack = ClusterStack::start(options(partner, operator), 2).await;
    for replica in &stack.replicas {
        wait_for_count(&replica.log, "issuer keys loaded", 2).await;
    }
    stack
}

/// A token of `issuer`'s `user` in login session `sid`.
fn session_token(issuer: &DevIssuer, user: &str, sid: &str) -> String {
    issuer.token_with_sid(user, AUDIENCE, &["admin"], 300, sid)
}

/// POSTs `token` to replica `replica`'s back-channel logout endpoint.
async fn post_logout(stack: &ClusterStack, replica: usize, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/backchannel-logout",
            stack.replicas[replica].backchannel_port()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={token}"))
        .send()
        .await
        .expect("the endpoint answers")
}

/// `issuer` logs `sub`/`sid` out through replica `replica`'s endpoint, and
/// every replica has enforced it (logged how many connections it closed);
/// returns how many they closed together.
async fn logout(
    stack: &ClusterStack,
    replica: usize,
    issuer: &DevIssuer,
    sub: Option<&str>,
    sid: Option<&str>,
) -> usize {
    // A replica that starts enforces the list's recent entries again: only
    // this logout's lines count.
    let covered = match (sid, sub) {
        (Some(sid), _) => format!("covered=sid {sid} "),
        (None, Some(sub)) => format!("covered=sub {sub} "),
        (None, None) => unreachable!("a logout names sub or sid"),
    };
    let enforcements = |stack: &ClusterStack| enforcements_of(stack, &covered);
    let before: Vec<usize> = enforcements(stack).iter().map(Vec::len).collect();
    let answer = post_logout(
        stack,
        replica,
        &issuer.logout_token(sub, sid, LOGOUT_AUDIENCE),
    )
    .await;
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let now = enforcements(stack);
        if now.iter().zip(&before).all(|(n, b)| n.len() > *b) {
            assert!(
                now.iter().zip(&before).all(|(n, b)| n.len() == b + 1),
                "one logout, one enforcement per replica: {now:?}"
            );
            return now.iter().map(|n| n[n.len() - 1]).sum();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every replica enforced the logout of {sub:?}/{sid:?}:\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// For each replica, the `connections_closed` of every revocation it has
/// enforced, in order.
fn enforcements(stack: &ClusterStack) -> Vec<Vec<usize>> {
    enforcements_of(stack, "")
}

/// The same, of the revocations whose log line contains `covered`.
fn enforcements_of(stack: &ClusterStack, covered: &str) -> Vec<Vec<usize>> {
    stack
        .replicas
        .iter()
        .map(|r| {
            log_lines(&r.log)
                .iter()
                .filter(|l| l.contains("revocation enforced") && l.contains(covered))
                .map(|l| {
                    l.split("connections_closed=")
                        .nth(1)
                        .unwrap()
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect()
        })
        .collect()
}

/// Which replica admitted `client` (the one whose log has its admission:
/// the node's name and the client id nats-server gave it).
fn admitted_by(stack: &ClusterStack, client: &TestClient) -> usize {
    let info = client.client.server_info();
    let (server, cid) = (
        format!("server={}", info.server_name),
        format!("client_id={} ", info.client_id),
    );
    let by: Vec<usize> = (0..stack.replicas.len())
        .filter(|&i| {
            log_lines(&stack.replicas[i].log).iter().any(|l| {
                l.contains("result=\"allowed\"") && l.contains(&server) && l.contains(&cid)
            })
        })
        .collect();
    assert_eq!(
        by.len(),
        1,
        "{server} {cid}: admitted by {by:?}\n{}",
        stack.logs()
    );
    by[0]
}

/// Connects to node `node` with `token` until replica `replica` admits
/// the connection, and returns every connection made, that one last:
/// nats-server hands each of its callout requests to either replica of the
/// queue group, not necessarily the one on the client's node.
async fn connect_until_admitted_by(
    stack: &ClusterStack,
    node: usize,
    token: &str,
    replica: usize,
) -> Vec<TestClient> {
    let mut made = Vec::new();
    for _ in 0..64 {
        let client = stack.connect(node, token).await.unwrap();
        let by = admitted_by(stack, &client);
        made.push(client);
        if by == replica {
            return made;
        }
    }
    panic!("replica {replica} admitted none of 64 connections to n{node}");
}

/// Connecting to node `node` with `token` is refused, and a replica logged
/// the refusal as `revoked`.
async fn refused_as_revoked(stack: &ClusterStack, node: usize, token: &str, case: &str) {
    let before = stack.count_in_logs("code=\"revoked\"");
    match stack.connect(node, token).await {
        Ok(_) => panic!("{case}: admitted"),
        Err(e) => assert!(
            e.to_string().to_lowercase().contains("authorization"),
            "{case}: refused for an unexpected reason: {e}"
        ),
    }
    wait_until(stack, case, || {
        stack.count_in_logs("code=\"revoked\"") > before
    })
    .await;
}

/// Waits (a hang guard, not a speed) until `done`.
async fn wait_until(stack: &ClusterStack, what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `client` was closed: its library saw the server go.
async fn closed(stack: &ClusterStack, client: &mut TestClient, who: &str) {
    assert!(
        client.wait_event("disconnected", HANG_GUARD).await,
        "{who}'s connection is closed: {:?}\n{}",
        client.events(),
        stack.logs()
    );
}

/// `clients` were not closed: none saw its server go, and each still
/// delivers to the next and receives from it (a closed one's reconnect
/// would be refused, and nothing would pass).
async fn still_connected(clients: &mut [(&str, &mut TestClient)]) {
    for (who, client) in clients.iter_mut() {
        assert!(
            !client
                .events()
                .iter()
                .any(|e| e.to_lowercase().contains("disconnected")),
            "{who} is still connected: {:?}",
            client.events()
        );
    }
    for i in 0..clients.len() {
        let (from, to) = (&clients[i], &clients[(i + 1) % clients.len()]);
        assert!(
            delivered_across(&from.1.client, &to.1.client).await,
            "{} to {}",
            from.0,
            to.0
        );
    }
}

/// True if a message `publisher` publishes reaches a subscriber of
/// `receiver` within 10 s (a delivery ends the wait at once). The two may
/// be on different nodes, where the subscription takes a moment to cross
/// the routes: the message is published again until it arrives.
async fn delivered_across(publisher: &async_nats::Client, receiver: &async_nats::Client) -> bool {
    use futures::StreamExt;
    let subject = format!("orders.after.{}", rand_suffix());
    let mut sub = receiver.subscribe(subject.clone()).await.unwrap();
    server_has_read(receiver).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if publisher
            .publish(subject.clone(), "probe".into())
            .await
            .is_err()
        {
            return false;
        }
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            return true;
        }
    }
    false
}

/// A token issued after now (iat is in whole seconds).
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

/// Logout by `sid` closes that session's connections (on any node, by any
/// replica) and no other of the same person's; by `sub`, all of that
/// person's; another issuer's user of the same name, subject and session
/// is untouched. Connections replica 1 admitted on n1 are closed after a
/// logout posted to replica 0; the kicked clients' reconnects with their
/// old tokens are refused and a new login is admitted. A replica that
/// restarts forgets what it admitted; the session registry does not, and a
/// logout still closes those connections.
async fn logouts_close_what_they_cover_across_the_cluster(operator: bool) {
    let partner = DevIssuer::start(0).await.unwrap();
    let mut stack = start(&partner, operator).await;
    let corp = &stack.issuer;
    let s1 = session_token(corp, "ana", "s1");
    let s2 = session_token(corp, "ana", "s2");
    // Session s1: on n1, admitted by replica 1 (and maybe more on n1,
    // admitted by replica 0 before), and on n2 (no replica there).
    let mut s1_clients = connect_until_admitted_by(&stack, 1, &s1, 1).await;
    s1_clients.push(stack.connect(2, &s1).await.unwrap());
    let mut s2_on_n0 = stack.connect(0, &s2).await.unwrap();
    let mut partners_ana = stack
        .connect(1, &session_token(&partner, "ana", "s1"))
        .await
        .unwrap();
    let mut bo = stack
        .connect(0, &session_token(corp, "bo", "s3"))
        .await
        .unwrap();

    // Session s1, posted to replica 0: all of its connections close,
    // replica 1's among them (whichever replica's KICK gets there first:
    // each enforces it, and two KICKs of one client may both be answered
    // as closing it, so the counts are at least, the events exact).
    let closed_s1 = logout(&stack, 0, corp, Some("user-ana"), Some("s1")).await;
    for client in &mut s1_clients {
        closed(&stack, client, "session s1").await;
    }
    assert!(closed_s1 >= s1_clients.len(), "{}", stack.logs());
    // Their clients reconnect at once with the same token: refused.
    wait_until(&stack, "the kicked clients' reconnects are refused", || {
        stack.count_in_logs("code=\"revoked\"") >= 2
    })
    .await;
    refused_as_revoked(&stack, 1, &s1, "session s1's token").await;
    still_connected(&mut [
        ("ana's session s2", &mut s2_on_n0),
        ("partner's ana", &mut partners_ana),
        ("bo", &mut bo),
    ])
    .await;

    // A new login is admitted, here by replica 1.
    next_second().await;
    let mut s4_clients =
        connect_until_admitted_by(&stack, 1, &session_token(corp, "ana", "s4"), 1).await;

    // Replica 1 restarts, once the session registry holds every
    // connection made so far (it is written behind the answers).
    let registry = async_nats::jetstream::new(stack.callout_account_client(0).await)
        .get_key_value("revocations_sessions")
        .await
        .expect("the replicas created the session registry");
    let ends: Vec<String> = s4_clients
        .iter()
        .chain([&s2_on_n0])
        .map(|c| {
            let info = c.client.server_info();
            format!(".{}.{}", info.server_id, info.client_id)
        })
        .collect();
    common::wait_until("ana's s2 and s4 connections are filed", || async {
        use futures::StreamExt;
        let keys: Vec<String> = registry
            .keys()
            .await
            .unwrap()
            .filter_map(|k| async move { k.ok() })
            .collect()
            .await;
        ends.iter().all(|end| keys.iter().any(|k| k.ends_with(end)))
    })
    .await;
    stack.replicas[1].restart().await;

    // All of ana's sessions, posted to the restarted replica 1: s2 and s4
    // close; partner's ana and bo stay.
    let closed_ana = logout(&stack, 1, corp, Some("user-ana"), None).await;
    closed(&stack, &mut s2_on_n0, "ana's session s2").await;
    for client in &mut s4_clients {
        closed(&stack, client, "ana's session s4").await;
    }
    assert!(closed_ana > s4_clients.len(), "{}", stack.logs());
    refused_as_revoked(&stack, 0, &s2, "ana's session s2's token").await;
    still_connected(&mut [("partner's ana", &mut partners_ana), ("bo", &mut bo)]).await;
    stack
        .connect(2, &session_token(&partner, "ana", "s5"))
        .await
        .expect("partner's ana logs in still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_close_what_they_cover_across_the_cluster_in_server_mode() {
    logouts_close_what_they_cover_across_the_cluster(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_close_what_they_cover_across_the_cluster_in_operator_mode() {
    logouts_close_what_they_cover_across_the_cluster(true).await;
}

/// Bad logout tokens, posted to either replica, get 400 and close nothing:
/// no revocation is put into the list (the first one either replica
/// enforces is the valid logout that follows them, which covers nobody
/// connected), and the connections they name stay. A replay is refused
/// too. Then a valid logout of the same session closes it: the control.
async fn bad_logouts_close_nothing(operator: bool) {
    let partner = DevIssuer::start(0).await.unwrap();
    let stranger = DevIssuer::start(0).await.unwrap();
    let stack = start(&partner, operator).await;
    let corp = &stack.issuer;
    let mut ana = stack
        .connect(1, &session_token(corp, "ana", "s1"))
        .await
        .unwrap();
    let mut bo = stack
        .connect(0, &session_token(corp, "bo", "s2"))
        .await
        .unwrap();

    let ana_s1 = || corp.logout_claims(Some("user-ana"), Some("s1"), LOGOUT_AUDIENCE);
    let signed = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = ana_s1();
        change(&mut claims);
        corp.sign_logout(&claims)
    };
    let genuine = corp.sign_logout(&ana_s1());
    // corp's claims, signed by partner's key.
    let forged = partner.sign_logout(&ana_s1());
    let bad = [
        (
            "an issuer not configured",
            stranger.logout_token(Some("user-ana"), Some("s1"), LOGOUT_AUDIENCE),
        ),
        (
            "the access tokens' audience",
            corp.logout_token(Some("user-ana"), Some("s1"), AUDIENCE),
        ),
        ("another issuer's signature", forged),
        (
            "no events",
            signed(&|c| {
                c.as_object_mut().unwrap().remove("events");
            }),
        ),
        ("a nonce", signed(&|c| c["nonce"] = "n".into())),
        (
            "expired",
            signed(&|c| {
                c["iat"] = 900.into();
                c["exp"] = 1000.into();
            }),
        ),
    ];
    for (i, (what, token)) in bad.iter().enumerate() {
        let answer = post_logout(&stack, i % 2, token).await;
        assert_eq!(answer.status(), 400, "{what}: {:?}", answer.text().await);
    }
    // A valid logout of someone not connected: the first revocation every
    // replica enforces, so none of the bad ones made one.
    assert_eq!(
        logout(&stack, 0, corp, Some("user-nobody"), None).await,
        0,
        "{}",
        stack.logs()
    );
    assert_eq!(enforcements(&stack), vec![vec![0], vec![0]]);
    // A logout acted on, then the same token again: a replay.
    let once = corp.logout_token(Some("user-nobody"), None, LOGOUT_AUDIENCE);
    assert_eq!(post_logout(&stack, 1, &once).await.status(), 200);
    let replayed = post_logout(&stack, 1, &once).await;
    assert_eq!(replayed.status(), 400, "{:?}", replayed.text().await);
    assert!(
        replayed.text().await.unwrap().contains("received before"),
        "a replay"
    );
    still_connected(&mut [("ana", &mut ana), ("bo", &mut bo)]).await;

    // The control: the genuine logout closes ana's session.
    let answer = post_logout(&stack, 0, &genuine).await;
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    closed(&stack, &mut ana, "ana's session s1").await;
    still_connected(&mut [("bo", &mut bo)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logouts_get_400_and_close_nothing_in_server_mode() {
    bad_logouts_close_nothing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logouts_get_400_and_close_nothing_in_operator_mode() {
    bad_logouts_close_nothing(true).await;
}
