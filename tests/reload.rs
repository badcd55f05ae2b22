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

/// A writer that pauses halfway with the file open has not finished: a
/// valid prefix (a role's allow list without the deny list after it) must
/// not apply however long the pause, and the whole file applies once the
/// writer closes it. Linux only: elsewhere the file is polled, and a
/// settle check cannot see a writer that pauses.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_open_by_a_slow_writer_applies_only_once_closed() {
    use std::io::Write;
    /// How often the service polls the config file (`CONFIG_POLL`).
    const SERVICE_POLL: Duration = Duration::from_secs(2);
    let stack = Stack::start(ServiceOptions::default()).await;
    let old = std::fs::read_to_string(&stack.service.config).unwrap();
    let first = format!("{old}\n[roles.guest]\nsub.allow = [\"public.>\"]\n");
    let rest = "sub.deny  = [\"public.secret.>\"]\n";
    let mut file = std::fs::File::create(&stack.service.config).unwrap();
    file.write_all(first.as_bytes()).unwrap();
    file.flush().unwrap();

    // Long enough for a poll and a settle check several times over.
    tokio::time::sleep(SERVICE_POLL * 3).await;
    assert_refused(
        &stack.url(),
        &stack.token("gus", &["guest"]),
        "the half-written file is not applied",
    )
    .await;
    assert_eq!(count_in_log(&stack.service.log, "config reloaded"), 0);
    assert!(
        stack.service.log_text().contains("still open for writing"),
        "the hold is said"
    );

    file.write_all(rest.as_bytes()).unwrap();
    drop(file);
    wait_for_log(
        &stack.service.log,
        "config reloaded",
        Duration::from_secs(5),
    )
    .await;
    let guest = connect(&stack.url(), &stack.token("gus", &["guest"]))
        .await
        .expect("the finished file applies");
    let admin = connect(&stack.url(), &stack.token("ana", &["admin"]))
        .await
        .unwrap();
    assert!(delivered(&admin.client, &guest.client, "public.news").await);
    assert!(
        not_delivered(&admin.client, &guest.client, "public.secret.plans").await,
        "the deny list written last is in force"
    );
}
