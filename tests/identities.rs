//! Machines and people through one callout: `[users.*]` identities with a
//! bcrypt password or an nkey, beside OIDC users, through a real nats-server.

mod common;

use async_nats::ConnectOptions;
use common::*;
use std::time::{Duration, Instant};

struct Users {
    billing_password: &'static str,
    sensor: nkeys::KeyPair,
    config: String,
}

fn users() -> Users {
    let billing_password = "correct horse battery staple";
    let monitor_password = "m0nitor";
    let sensor = nkeys::KeyPair::new_user();
    let config = format!(
        r#"
[users.svc-billing]
password_bcrypt = "{billing}"
roles = ["writer"]

[users.monitor]
password_bcrypt = "{monitor}"
sub.allow = ["metrics.>"]
account = "TEAM"

[users.team-bot]
password_bcrypt = "{bot}"
pub.allow = ["metrics.>"]
account = "TEAM"

[users.sensor-7]
nkey = "{sensor}"
pub.allow = ["sensors.{{{{name}}}}.>"]
"#,
        // Cost 4 keeps the test fast; `hash-password` refuses below 10.
        billing = bcrypt::hash(billing_password, 4).unwrap(),
        monitor = bcrypt::hash(monitor_password, 4).unwrap(),
        bot = bcrypt::hash("b0t", 4).unwrap(),
        sensor = sensor.public_key(),
    );
    Users {
        billing_password,
        sensor,
        config,
    }
}

fn password(user: &str, password: &str) -> ConnectOptions {
    ConnectOptions::with_user_and_password(user.into(), password.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_and_people_share_one_callout_at_the_server() {
    let u = users();
    let stack = Stack::start(ServiceOptions {
        roles: format!("{}\n{}", default_roles(), u.config),
        ..Default::default()
    })
    .await;
    let url = stack.url();
    let admin = connect(&url, &stack.token("ana", &["admin"]))
        .await
        .expect("a person with a token");

    // A bcrypt service account with the writer role.
    let billing = connect_with(&url, password("svc-billing", u.billing_password))
        .await
        .expect("svc-billing with its password");
    assert!(delivered(&billing.client, &admin.client, "orders.paid").await);
    assert!(
        not_delivered(&billing.client, &admin.client, "orders.audit").await,
        "writer's deny list applies"
    );

    // Fixed permission sets in another account.
    let monitor = connect_with(&url, password("monitor", "m0nitor"))
        .await
        .expect("monitor");
    let bot = connect_with(&url, password("team-bot", "b0t"))
        .await
        .expect("team-bot");
    assert!(delivered(&bot.client, &monitor.client, "metrics.cpu").await);
    assert!(
        not_delivered(&admin.client, &monitor.client, "metrics.cpu").await,
        "monitor sits in TEAM, isolated from APP"
    );

    // An nkey identity: signs this connection's nonce.
    let seed = u.sensor.seed().unwrap();
    let sensor = connect_with(&url, ConnectOptions::with_nkey(seed))
        .await
        .expect("sensor with its nkey");
    assert!(delivered(&sensor.client, &admin.client, "sensors.sensor-7.temp").await);
    assert!(
        not_delivered(&sensor.client, &admin.client, "sensors.other.temp").await,
        "{{name}} is the config user's name"
    );

    // A wrong password is refused by nats-server for the service's reason
    // (borrowed and unknown credentials are decided in `decisions.rs`).
    assert_refused_as(
        &stack,
        "identity_credentials",
        "wrong password",
        connect_with(&url, password("svc-billing", "guess")),
    )
    .await;
    let log = stack.service.log_text();
    for secret in [
        "guess",
        u.billing_password,
        "m0nitor",
        "b0t",
        &u.sensor.seed().unwrap(),
    ] {
        assert!(!log.contains(secret), "a password or seed is never logged");
    }
}

/// The longest password `hash-password` takes (71 bytes: bcrypt's 72-byte
/// block ends with a zero) logs in; a longer one is refused by both sides,
/// saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_password_hash_password_takes_logs_in_and_a_longer_one_says_why() {
    let hash_of = |password: String| {
        use std::io::Write;
        let mut child = callout_bin()
            .args(["hash-password", "--cost", "10"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let longest = "p".repeat(71);
    let out = hash_of(longest.clone());
    assert!(out.status.success(), "{}", output_text(&out));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let too_long = hash_of("p".repeat(72));
    assert_eq!(too_long.status.code(), Some(2));
    assert!(
        output_text(&too_long).contains("at most 71 bytes"),
        "{}",
        output_text(&too_long)
    );

    let stack = Stack::start(ServiceOptions {
        roles: format!(
            "{}\n[users.long]\npassword_bcrypt = \"{hash}\"\nroles = [\"writer\"]\n",
            default_roles()
        ),
        ..Default::default()
    })
    .await;
    connect_with(&stack.url(), password("long", &longest))
        .await
        .expect("71 bytes log in");
    assert_refused_as(
        &stack,
        "identity_credentials",
        "72 bytes",
        connect_with(&stack.url(), password("long", &format!("{longest}p"))),
    )
    .await;
    wait_for_log(
        &stack.service.log,
        "is 72 bytes, more than the 71 bcrypt can check",
        Duration::from_secs(5),
    )
    .await;
}

/// No unauthenticated client may make another client wait: a burst of
/// thousands of wrong passwords for one service account, then a steady
/// stream, while people log in with tokens. Every token login is admitted
/// (within nats-server's 2 s auth timeout), the flood is refused at once
/// beyond a small bounded queue, and SIGTERM ends the service promptly in
/// the middle of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_for_one_name_makes_no_other_client_wait() {
    // bcrypt at cost 12: each wrong guess costs the service about 0.25 s.
    let hash = bcrypt::hash("the real one", 12).unwrap();
    let mut stack = Stack::start(ServiceOptions {
        roles: format!(
            "{}\n[users.svc-billing]\npassword_bcrypt = \"{hash}\"\nroles = [\"writer\"]\n",
            default_roles()
        ),
        ..Default::default()
    })
    .await;
    let addr = stack.url().trim_start_matches("nats://").to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // More than the service's 4,096 requests in flight when the limit allows.
    let burst = (open_files_limit() / 3).min(5000);
    let mut flood = Vec::new();
    for _ in 0..burst {
        let addr = addr.clone();
        flood.push(tokio::spawn(async move {
            raw_connect(&addr, "svc-billing", "guess").await
        }));
    }
    for _ in 0..40 {
        let (addr, stop) = (addr.clone(), stop.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                raw_connect(&addr, "svc-billing", "guess").await;
            }
        }));
    }

    // Twenty people log in, one after another, while the flood goes on
    // (its 40 steady tasks run until `stop`). Admitted is what they see:
    // were token logins queued behind the guesses (thousands at about
    // 0.25 s each), nats-server's 2 s auth timeout would refuse them.
    let logins = 20;
    for n in 0..logins {
        let token = stack.token(&format!("ana-{n}"), &["reader"]);
        let admitted = connect(&stack.url(), &token).await;
        assert!(
            admitted.is_ok(),
            "token login {n} refused during the flood: {:?}",
            admitted.err()
        );
    }
    let log = stack.service.log_text();
    assert!(
        log.contains("code=\"unavailable\"") && log.contains("refused at once rather than queued"),
        "the flood met the bound"
    );

    // SIGTERM in the middle of it: the service does not work through what
    // the flood queued (minutes of bcrypt) before it exits. The bound is a
    // container runtime's default grace period, not a speed.
    let stopping = Instant::now();
    let status = tokio::task::block_in_place(|| stack.service.terminate());
    let took = stopping.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(30),
        "SIGTERM took {took:?}: longer than a container runtime waits before SIGKILL"
    );
    for task in flood {
        task.abort();
    }
    eprintln!("burst {burst}, {logins} token logins admitted, SIGTERM took {took:?}");
}
