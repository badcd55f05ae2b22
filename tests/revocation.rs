//! Revocation through a real nats-server: a back-channel logout received
//! by the service, or an admin's `nats-oidc-callout revoke`, is kept in the
//! revocation list's KV bucket, and tokens issued before it are refused
//! (`revoked`) by every replica, while a new login is admitted; with a
//! system-account login, the live connections it covers are closed (across
//! a cluster: `revocation_cluster.rs`).

mod common;

use std::time::Duration;

use futures::StreamExt;

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
    let stack = Stack::start(ServiceOptions {
        http_port: Some(0),
        ..options()
    })
    .await;
    let port = stack.service.http_port();
    let cache_hits = || async move {
        let (_, metrics) = http_get(port, "/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("nats_oidc_callout_token_cache_hits_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("the token cache counts its hits")
    };
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

    // One session of ana's: that session only. Its token is no longer
    // one the cache knows verified; the other session's still is.
    logout(&stack, &stack.service, Some("user-ana"), Some("s1")).await;
    // The cache forgets when the bucket's watch delivers the entry.
    wait_for_log(
        &stack.service.log,
        "signal=backchannel revision=",
        Duration::from_secs(20),
    )
    .await;
    let hits = cache_hits().await;
    assert_refused_as(
        &stack,
        "revoked",
        "ana's ended session",
        connect(&url, &ana_1),
    )
    .await;
    assert_eq!(cache_hits().await, hits, "the revoked token was forgotten");
    connect(&url, &ana_2)
        .await
        .expect("ana's other session is not covered");
    assert_eq!(
        cache_hits().await,
        hits + 1,
        "the other session's is still known"
    );

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
/// reconnects with the same tokens are refused: in server mode with user
/// `sys`, in operator mode with a system-account user's creds file.
async fn a_logout_closes_the_live_connections_it_covers(operator: bool) {
    let opts = ServiceOptions {
        operator,
        system_login: true,
        http_port: Some(0),
        ..options()
    };
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
    let (_, metrics) = http_get(stack.service.http_port(), "/metrics").await;
    for line in [
        "nats_oidc_callout_revocations_total{signal=\"backchannel\"} 1\n",
        "nats_oidc_callout_revocations_total{signal=\"admin\"} 0\n",
        "nats_oidc_callout_revocation_connections_closed_total 1\n",
        "nats_oidc_callout_session_registry_failures_total 0\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

/// A revocation made while no replica runs (`revoke` needs none) is
/// enforced when one starts and reads the list: the connections it covers
/// that were admitted before are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_while_no_replica_runs_is_enforced_when_one_starts() {
    let (mut stack, mut ana, mut bo) = two_filed_connections(false).await;
    stack.service.kill();
    next_second().await;
    let out = revoke(
        &stack.service.config,
        &["--issuer", "default", "--sub", "user-ana"],
    )
    .await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        !ana.wait_event("disconnected", Duration::from_millis(200))
            .await,
        "nothing closes it while no replica runs: {:?}",
        ana.events()
    );

    stack.service.restart().await;
    assert!(
        ana.wait_event("disconnected", HANG_GUARD).await,
        "closed once a replica reads the list: {:?}\n{}",
        ana.events(),
        stack.service.log_text()
    );
    wait_for_log(&stack.service.log, "connections_closed=1", HANG_GUARD).await;
    assert!(
        !bo.wait_event("disconnected", Duration::from_millis(500))
            .await,
        "bo stays: {:?}",
        bo.events()
    );
}

/// A system login that is not in the system account reaches no server:
/// said at start, as an error, rather than at the first revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_login_outside_the_system_account_is_reported_at_start() {
    if operator_mode() {
        return;
    }
    let mut opts = options();
    opts.revocation
        .push_str("\nsystem_user = \"auth\"\nsystem_password = \"authpw\"\n");
    let stack = Stack::start(opts).await;
    wait_for_log(
        &stack.service.log,
        "the system-account login (revocation.system_*) reaches no server",
        HANG_GUARD,
    )
    .await;
}

/// A replica that restarted has forgotten what it admitted; the session
/// registry has not: a revocation still closes those connections, and only
/// those it covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_closes_the_connections_a_replica_admitted_before_it_restarted() {
    closes_what_was_admitted_before_a_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_closes_the_connections_a_replica_admitted_before_it_restarted_in_operator_mode(
) {
    closes_what_was_admitted_before_a_restart(true).await;
}

/// A stack that closes revoked connections (a system login), with ana
/// (session s1) and bo (s2) connected and both filed in the session
/// registry: it is written behind the answers, so this waits until both
/// are there, as the operator's `nats kv ls` would show them.
async fn two_filed_connections(operator: bool) -> (Stack, TestClient, TestClient) {
    let opts = ServiceOptions {
        operator,
        system_login: true,
        ..options()
    };
    let stack = Stack::start(opts).await;
    let url = stack.url();
    let ana = connect(&url, &session_token(&stack, "ana", "s1"))
        .await
        .unwrap();
    let bo = connect(&url, &session_token(&stack, "bo", "s2"))
        .await
        .unwrap();
    let registry = async_nats::jetstream::new(stack.callout_account_client().await)
        .get_key_value("revocations_sessions")
        .await
        .expect("the service created the session registry");
    wait_until("both connections are filed", || async {
        registry.keys().await.unwrap().count().await == 2
    })
    .await;
    (stack, ana, bo)
}

async fn closes_what_was_admitted_before_a_restart(operator: bool) {
    let (mut stack, mut ana, mut bo) = two_filed_connections(operator).await;

    stack.service.restart().await;
    let closed_before = count_in_log(&stack.service.log, "connections_closed=1");
    logout(&stack, &stack.service, Some("user-ana"), None).await;
    assert!(
        ana.wait_event("disconnected", Duration::from_secs(20))
            .await,
        "the connection admitted before the restart is closed: {:?}\n{}",
        ana.events(),
        stack.service.log_text()
    );
    wait_for_count(
        &stack.service.log,
        "connections_closed=1",
        closed_before + 1,
    )
    .await;
    assert!(
        !bo.wait_event("disconnected", Duration::from_millis(500))
            .await,
        "a connection the revocation does not cover stays: {:?}",
        bo.events()
    );
    assert!(delivered(&bo.client, &bo.client, "orders.after").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_closes_the_live_connections_it_covers_and_no_other() {
    a_logout_closes_the_live_connections_it_covers(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_closes_the_live_connections_it_covers_and_no_other_in_operator_mode() {
    a_logout_closes_the_live_connections_it_covers(true).await;
}

/// `nats-oidc-callout revoke --config <the service's config> ARGS`, as an
/// admin runs it (blocking, so off the runtime the issuer serves on).
async fn revoke(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = callout_bin();
    command.arg("revoke").arg("--config").arg(config).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// `revoke ARGS` succeeds, says so in one line, and the running service's
/// watch has logged the entry (so the next connect meets it).
async fn admin_revokes(stack: &Stack, args: &[&str], said: &str) {
    let logged = "signal=admin";
    let before = count_in_log(&stack.service.log, logged);
    let out = revoke(&stack.service.config, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args:?}: {}", output_text(&out));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    // Nothing else: not even the NATS client's connect and close lines.
    assert!(out.stderr.is_empty(), "{}", output_text(&out));
    assert!(
        stdout.starts_with(&format!(
            "revoked {said} of issuer default (signal admin): tokens issued until now ("
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("are refused, a new login is admitted"),
        "{stdout}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count_in_log(&stack.service.log, logged) <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the service logged no revocation for {args:?}:\n{}",
            stack.service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `revoke ARGS` with `config` fails, writes nothing and says why on
/// stderr: exit 2 when it cannot run as asked.
async fn admin_is_refused(config: &std::path::Path, args: &[&str], says: &str) {
    admin_fails(config, args, 2, says).await;
}

async fn admin_fails(config: &std::path::Path, args: &[&str], code: i32, says: &str) {
    let out = revoke(config, args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}",
        output_text(&out)
    );
    assert!(out.stdout.is_empty(), "{args:?}: {}", output_text(&out));
    assert!(stderr.contains(says), "{args:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_revokes_a_user_a_subject_or_a_session_and_a_new_login_is_admitted() {
    let stack = Stack::start(options()).await;
    let url = stack.url();
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

    // By NATS user name: ana's token is refused, bo's admitted.
    admin_revokes(
        &stack,
        &["--issuer", "default", "--user", "ana"],
        "user ana",
    )
    .await;
    assert_refused_as(&stack, "revoked", "ana's user name", connect(&url, &ana)).await;
    connect(&url, &bo).await.expect("bo is not covered");
    // By session: that session only.
    admin_revokes(&stack, &["--issuer", "default", "--sid", "s3"], "sid s3").await;
    assert_refused_as(&stack, "revoked", "cy's session", connect(&url, &cy_1)).await;
    connect(&url, &cy_2)
        .await
        .expect("cy's other session is not covered");
    // By subject (the `sub` claim, user-<name> at the dev issuer).
    admin_revokes(
        &stack,
        &["--issuer", "default", "--sub", "user-dee"],
        "sub user-dee",
    )
    .await;
    assert_refused_as(&stack, "revoked", "dee's subject", connect(&url, &dee)).await;
    connect(&url, &bo).await.expect("bo is still not covered");

    // A login after the revocation is admitted.
    next_second().await;
    connect(&url, &session_token(&stack, "ana", "s6"))
        .await
        .expect("a token issued after the revocation");

    // Refused before anything is written.
    let config = &stack.service.config;
    admin_is_refused(
        config,
        &["--issuer", "corp", "--user", "ana"],
        r#"--issuer corp: no [oidc] block of that name; the config has ["default"]"#,
    )
    .await;
    admin_is_refused(
        config,
        &["--issuer", "default", "--sub", "user-ana", "--user", "ana"],
        "cannot be used with",
    )
    .await;
    admin_is_refused(config, &["--issuer", "default"], "required").await;
    admin_is_refused(
        config,
        &["--issuer", "default", "--user", ""],
        "--user is empty",
    )
    .await;
    admin_is_refused(
        config,
        &["--issuer", "default", "--sid", "s1\n\u{1b}[2K"],
        r#"--sid "s1\n\u{1b}[2K" has control characters"#,
    )
    .await;
    // The same config without [revocation]: revocation is off. Beside
    // the original, whose relative seed paths it shares.
    let text = std::fs::read_to_string(config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| {
            !l.starts_with("[revocation]")
                && !l.starts_with("kv_bucket")
                && !l.starts_with("backchannel_listen")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let off = config.with_file_name("revocation-off.toml");
    std::fs::write(&off, without).unwrap();
    admin_is_refused(
        &off,
        &["--issuer", "default", "--user", "ana"],
        "the config has no revocation.kv_bucket",
    )
    .await;
    // A bucket no service reads (another config's, say) is not made up:
    // exit 1, and the second try finds it missing too.
    let elsewhere = config.with_file_name("revocation-elsewhere.toml");
    std::fs::write(
        &elsewhere,
        text.replace("kv_bucket = \"revocations\"", "kv_bucket = \"elsewhere\""),
    )
    .unwrap();
    for _ in 0..2 {
        admin_fails(
            &elsewhere,
            &["--issuer", "default", "--user", "ana"],
            1,
            r#"error: revocation bucket "elsewhere" does not exist: the service creates it when it starts"#,
        )
        .await;
    }
}
