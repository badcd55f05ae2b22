//! Machines and people through one callout: `[users.*]` identities with a
//! bcrypt password or an nkey, beside OIDC users, through a real nats-server.

mod common;

use async_nats::ConnectOptions;
use common::*;

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
async fn service_accounts_and_people_share_one_callout() {
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

    let log = stack.service.log_text();
    for line in [
        "user=svc-billing issuer=config",
        "user=monitor issuer=config roles=[\"monitor\"] scopes=[] account=TEAM",
        "user=sensor-7 issuer=config",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }

    // Wrong or borrowed credentials.
    assert_refused_as(
        &stack,
        "identity_credentials",
        "wrong password",
        connect_with(&url, password("svc-billing", "guess")),
    )
    .await;
    assert_refused_as(
        &stack,
        "identity_credentials",
        "a person's token under a service account's name",
        connect_with(
            &url,
            password("svc-billing", &stack.token("ana", &["admin"])),
        ),
    )
    .await;
    assert_refused_as(
        &stack,
        "identity_credentials",
        "an nkey identity with a password",
        connect_with(&url, password("sensor-7", u.billing_password)),
    )
    .await;
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    assert_refused_as(
        &stack,
        "unknown_nkey",
        "an nkey nobody configured",
        connect_with(&url, ConnectOptions::with_nkey(stranger)),
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
