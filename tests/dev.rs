//! `nats-oidc-callout dev`: the README's first command. Started as a user
//! would; the printed tokens must work through the nats-server it started.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_tokens_that_work() {
    dev_works(false).await;
}

/// `dev --operator`: the same, with nats-server in operator mode and the
/// printed commands presenting the sentinel it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_operator_prints_tokens_and_a_sentinel_that_work() {
    dev_works(true).await;
}

async fn dev_works(operator: bool) {
    let port = free_port();
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools");
    let _ = nats_server_bin();
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("dev.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut args = vec!["dev".to_string(), "--nats-port".into(), port.to_string()];
    if operator {
        args.push("--operator".into());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .args(&args)
        .arg("--tools-dir")
        .arg(&tools)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    // A failing run shows what `dev` said.
    struct ShowLog(std::path::PathBuf);
    impl Drop for ShowLog {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!(
                    "---- dev output ----\n{}",
                    std::fs::read_to_string(&self.0).unwrap_or_default()
                );
            }
        }
    }
    let _show = ShowLog(log_path);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut admin, mut reader, mut curl) = (None, None, None);
    let mut generated = None;
    let mut sentinel = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while admin.is_none() || reader.is_none() || curl.is_none() {
        let line = rx
            .recv_timeout(deadline - std::time::Instant::now())
            .expect("dev printed its tokens");
        if let Some(t) = line.strip_prefix("ADMIN_TOKEN=") {
            admin = Some(t.to_string());
        } else if let Some(t) = line.strip_prefix("READER_TOKEN=") {
            reader = Some(t.to_string());
        } else if let Some(d) = line.trim().strip_prefix("generated configs:") {
            generated = Some(std::path::PathBuf::from(d.trim()));
        } else if let Some(u) = line.trim().strip_prefix("curl '") {
            curl = Some(u.trim_end_matches('\'').to_string());
        } else if let Some((_, rest)) = line.split_once("--creds ") {
            sentinel = rest.split_whitespace().next().map(std::path::PathBuf::from);
        }
    }
    let url = format!("nats://127.0.0.1:{port}");
    // The commands dev printed present the sentinel; so do these clients.
    assert_eq!(
        sentinel.is_some(),
        operator,
        "--creds in the printed commands"
    );
    if let Some(creds) = sentinel {
        register_sentinel(&url, creds);
    }
    let admin = connect(&url, &admin.unwrap())
        .await
        .expect("printed admin token works");
    let mut reader = connect(&url, &reader.unwrap())
        .await
        .expect("printed reader token works");
    assert!(
        delivered(&admin.client, &reader.client, "orders.new").await,
        "admin events {:?}, reader events {:?}, nats-server log:\n{}",
        admin.events(),
        reader.events(),
        generated
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("nats.log")).ok())
            .unwrap_or_default()
    );
    assert!(
        not_delivered(&reader.client, &admin.client, "orders.new").await,
        "reader may not publish"
    );
    assert!(
        reader
            .wait_event("permissions violation", Duration::from_secs(2))
            .await
    );

    let minted = reqwest::get(curl.unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    connect(&url, &minted)
        .await
        .expect("a token minted by the printed curl command works");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "dev exits cleanly on SIGTERM: {status}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the nats-server dev started is stopped with it"
    );
}
