//! Reloading the config while connections are open: SIGHUP and file changes.

mod common;

use std::time::Duration;

use common::*;

fn edit_config(service: &CalloutService, from: &str, to: &str) {
    let text = std::fs::read_to_string(&service.config).unwrap();
    assert!(text.contains(from), "config has {from:?}");
    std::fs::write(&service.config, text.replacen(from, to, 1)).unwrap();
}

const READER_PUB: &str = "[roles.reader]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_role_table_to_the_next_connection_without_dropping_any() {
    let mut stack = Stack::start(ServiceOptions::default()).await;
    let admin = connect(&stack.url(), &stack.token("ana", &["admin"]))
        .await
        .unwrap();
    let old_reader = connect(&stack.url(), &stack.token("rita", &["reader"]))
        .await
        .unwrap();
    assert!(not_delivered(&old_reader.client, &admin.client, "orders.new").await);

    edit_config(
        &stack.service,
        READER_PUB,
        "[roles.reader]\npub.allow = [\"orders.new\"]\n",
    );
    stack.service.signal("HUP");
    wait_for_log(
        &stack.service.log,
        "config reloaded",
        Duration::from_secs(5),
    )
    .await;
    assert!(stack.service.is_running());

    let new_reader = connect(&stack.url(), &stack.token("rita", &["reader"]))
        .await
        .unwrap();
    assert!(
        delivered(&new_reader.client, &admin.client, "orders.new").await,
        "the next connection gets the new table"
    );
    assert!(
        delivered(&admin.client, &old_reader.client, "orders.x").await,
        "the open connection was not dropped"
    );
    assert!(
        stack.service.log_text().contains("keys_kept=true"),
        "the issuer keys were kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_new_config_is_reported_and_the_old_one_stays() {
    let mut stack = Stack::start(ServiceOptions::default()).await;
    edit_config(
        &stack.service,
        READER_PUB,
        "[roles.reader]\npub.allow = [\"orders..bad\"]\n",
    );
    stack.service.signal("HUP");
    wait_for_log(
        &stack.service.log,
        "config reload failed; keeping the running config",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        stack.service.log_text().contains("roles.reader.pub.allow"),
        "the reason names the key"
    );
    assert!(stack.service.is_running());
    let admin = connect(&stack.url(), &stack.token("ana", &["admin"]))
        .await
        .expect("old config still serves");
    let reader = connect(&stack.url(), &stack.token("rita", &["reader"]))
        .await
        .unwrap();
    assert!(delivered(&admin.client, &reader.client, "orders.new").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_is_picked_up_without_a_signal() {
    let stack = Stack::start(ServiceOptions::default()).await;
    assert_refused(
        &stack.url(),
        &stack.token("gus", &["guest"]),
        "guest has no role yet",
    )
    .await;
    let text = std::fs::read_to_string(&stack.service.config).unwrap();
    std::fs::write(
        &stack.service.config,
        format!("{text}\n[roles.guest]\nsub.allow = [\"public.>\"]\n"),
    )
    .unwrap();
    wait_for_log(
        &stack.service.log,
        "config reloaded",
        Duration::from_secs(8),
    )
    .await;
    let guest = connect(&stack.url(), &stack.token("gus", &["guest"]))
        .await
        .expect("guest role now exists");
    let admin = connect(&stack.url(), &stack.token("ana", &["admin"]))
        .await
        .unwrap();
    assert!(delivered(&admin.client, &guest.client, "public.news").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_issuer_audience_applies_after_reload() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let other_aud = stack.issuer.token("ana", "other-api", &["admin"], 300);
    assert_refused(&stack.url(), &other_aud, "audience not configured yet").await;
    edit_config(
        &stack.service,
        "audience = [\"nats\"]",
        "audience = [\"nats\", \"other-api\"]",
    );
    stack.service.signal("HUP");
    wait_for_log(
        &stack.service.log,
        "config reloaded",
        Duration::from_secs(5),
    )
    .await;
    // [oidc] changed: a fresh key manager loads the keys again.
    wait_for_log(
        &stack.service.log,
        "keys_kept=false",
        Duration::from_secs(5),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while count_in_log(&stack.service.log, "issuer keys loaded") < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    connect(&stack.url(), &other_aud)
        .await
        .expect("the new audience is accepted");
}

/// A reload that fails because a file the config names is missing for a
/// moment (a seed being rotated) is tried again, and applies once the file
/// is back: nothing waits for the config file itself to change again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_failed_on_a_missing_seed_applies_once_the_seed_is_back() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let seed = stack.service.config.with_file_name("issuer.nk");
    let aside = stack.service.config.with_file_name("issuer.nk.aside");
    std::fs::rename(&seed, &aside).unwrap();
    edit_config(
        &stack.service,
        "[roles.admin]",
        "[roles.guest]\nsub.allow = [\"public.>\"]\n\n[roles.admin]",
    );
    wait_for_log(
        &stack.service.log,
        "config reload failed",
        Duration::from_secs(10),
    )
    .await;
    std::fs::rename(&aside, &seed).unwrap();
    wait_for_log(
        &stack.service.log,
        "config reloaded",
        Duration::from_secs(10),
    )
    .await;
    connect(&stack.url(), &stack.token("gus", &["guest"]))
        .await
        .expect("the new role applies");
    assert_eq!(
        count_in_log(&stack.service.log, "config reload failed"),
        1,
        "said once, however often it was tried"
    );
}
