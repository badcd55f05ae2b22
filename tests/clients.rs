//! The grants of `jetstream.rs` and `connection_rules.rs` with a second
//! and a third client library, nats-py (tests/clients/grants.py) and
//! nats.js (tests/clients/js/grants.mjs): the compiled subjects must serve
//! the calls each library makes (nats-py's KV watch, keys and history ask
//! for consumer info, which async-nats does not; its ephemeral pull
//! consumers are named in the create subject; nats.js looks a durable up
//! before it fetches and puts KV values through the API prefix).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use async_nats::jetstream::{self, consumer};
use common::*;

/// A Python with nats-py, installed once into `.tools/nats-py` from
/// tests/clients/requirements.txt.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let venv = root.join(".tools/nats-py");
            let python = venv.join("bin/python");
            let ready = |p: &PathBuf| {
                Command::new(p)
                    .args(["-c", "import nats, nkeys, aiohttp"])
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !ready(&python) {
                let made = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("python3 runs");
                assert!(made.success(), "python3 -m venv {} failed", venv.display());
                let installed = Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "-r"])
                    .arg(root.join("tests/clients/requirements.txt"))
                    .status()
                    .expect("pip runs");
                assert!(installed.success(), "pip could not install nats-py");
            }
            assert!(
                ready(&python),
                "nats-py is not importable from {}",
                python.display()
            );
            python
        })
        .clone()
}

/// The nats.js version tests/clients/js/package.json pins.
const NATS_JS: &str = "3.3.1";

/// tests/clients/js with nats.js in its node_modules, installed once
/// (`npm ci`, pinned by its package-lock.json).
fn nats_js() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/js");
        // The versions package.json pins (a stale install is redone).
        let ready = |d: &PathBuf| {
            ["transport-node", "jetstream", "kv"].iter().all(|p| {
                let installed = d.join("node_modules/@nats-io").join(p).join("package.json");
                std::fs::read_to_string(installed)
                    .is_ok_and(|t| t.contains(&format!("\"version\": \"{NATS_JS}\"")))
            })
        };
        if !ready(&dir) {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .expect("npm runs (Node.js 20+ is needed for the nats.js tests)");
            assert!(status.success(), "npm ci failed in {}", dir.display());
        }
        assert!(ready(&dir), "nats.js is not installed in {}", dir.display());
        dir
    })
    .clone()
}

/// A stack in the recommended layout with the streams and buckets of the
/// grant suites, and the administrator's JetStream context in DATA.
async fn grant_stack() -> (Stack, TestClient, jetstream::Context) {
    let stack = Stack::start(ServiceOptions {
        jetstream: true,
        websocket: true,
        roles: fixtures::GRANT_ROLES.into(),
        ..ServiceOptions::default()
    })
    .await;
    let admin_client = connect(&stack.url(), &stack.token("root", &["admin"]))
        .await
        .unwrap();
    let admin = jetstream::new(admin_client.client.clone());
    fixtures::orders(&admin).await;
    fixtures::buckets(&admin).await;
    (stack, admin_client, admin)
}

/// Runs a client library's grant script with a token per role (and the
/// sentinel's creds in operator mode), and asserts that it passed every
/// case named (a script that skipped some would pass otherwise).
async fn run_grant_script(
    stack: &Stack,
    mut script: Command,
    library: &str,
    roles: &[&str],
    cases: &[&str],
) {
    script.arg(stack.url()).arg(stack.nats.ws_url());
    for role in roles {
        let user = if *role == "profile" { "ana" } else { role };
        script.env(
            format!("TOKEN_{}", role.to_uppercase()),
            stack.token(user, &[role]),
        );
    }
    script.env(
        "TOKEN_REQUESTER2",
        stack.token("requester2", &["requester"]),
    );
    // Operator mode: the sentinel's creds beside the token, as browsers and
    // programs connect (nats.js sends the sentinel's nkey too).
    if let Some(creds) = sentinel_for(&stack.url()) {
        script.env("SENTINEL_CREDS", creds);
    }
    let out = tokio::task::spawn_blocking(move || script.output().unwrap())
        .await
        .unwrap();
    let text = output_text(&out);
    println!("{text}");
    assert!(out.status.success(), "{library} cases failed:\n{text}");
    for case in cases {
        assert!(
            text.contains(&format!("PASS {case}\n")),
            "{case} did not pass:\n{text}"
        );
    }
}

/// What the server holds after a grant script: the acks landed, nothing
/// was lost, nobody else's key changed.
async fn assert_nothing_lost(admin: &jetstream::Context) {
    let worker: consumer::PullConsumer = admin
        .get_consumer_from_stream("worker", "ORDERS")
        .await
        .unwrap();
    assert_eq!(worker.cached_info().ack_floor.stream_sequence, 2);
    let mut orders = admin.get_stream("ORDERS").await.unwrap();
    assert_eq!(orders.info().await.unwrap().state.messages, 2);
    let profiles = admin.get_key_value("profiles").await.unwrap();
    assert_eq!(
        profiles.get("bob.email").await.unwrap().as_deref(),
        Some(&b"bob@example.com"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grant_works_for_nats_py_as_for_async_nats() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let (stack, _admin_client, admin) = grant_stack().await;
    let mut script = Command::new(&python);
    script.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/grants.py"
    ));
    run_grant_script(
        &stack,
        script,
        "nats-py",
        &[
            "worker",
            "reader",
            "replayer",
            "ops",
            "profile",
            "service",
            "requester",
            "browser",
        ],
        &[
            "consume: fetch its durable",
            "consume: fetch another durable",
            "consume: delete the stream",
            "read: direct get, last by subject",
            "read: purge",
            "replay: ordered consumer delivers",
            "replay: pull from it",
            "manage: delete its stream",
            "manage: create another stream",
            "kv: keys",
            "kv: the watch sees the value",
            "kv: get another's key",
            "kv: keys of a bucket it may read only some keys of",
            "resp: a second answer is refused",
            "resp: no other inbox",
            "inbox: another user cannot subscribe to mine",
            "inbox: its own answers still come",
            "websocket: a websocket-only role is refused over TCP",
            "websocket: admitted over websocket",
        ],
    )
    .await;
    assert_nothing_lost(&admin).await;
    // nats-py's TCP attempt as the browser was refused by the service, for
    // its connection type, and no other connection was.
    let type_refusals = || count_in_log(&stack.service.log, "code=\"connection_type\"");
    assert_eq!(type_refusals(), 1, "{}", stack.service.log_text());
    assert_refused_as(
        &stack,
        "connection_type",
        "async-nats over TCP as the browser is refused the same way",
        connect(&stack.url(), &stack.token("browser", &["browser"])),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grant_works_for_nats_js_as_for_async_nats() {
    let dir = tokio::task::spawn_blocking(nats_js).await.unwrap();
    let (stack, _admin_client, admin) = grant_stack().await;
    let mut script = Command::new("node");
    script.arg("grants.mjs").current_dir(&dir);
    run_grant_script(
        &stack,
        script,
        "nats.js",
        &[
            "worker",
            "reader",
            "replayer",
            "profile",
            "service",
            "requester",
        ],
        &[
            "consume: fetch its durable",
            "consume: ack",
            "consume: fetch another durable",
            "consume: fetch another durable, bound without its info",
            "consume: delete the stream",
            "read: stream info",
            "read: get by sequence",
            "read: direct get, last by subject",
            "read: purge",
            "replay: ordered consumer delivers",
            "kv: get",
            "kv: keys",
            "kv: the watch sees the value",
            "kv: write a read-only bucket",
            "kv: put its own key",
            "kv: get its own key",
            "kv: put another's key",
            "kv: get another's key",
            "inbox: answers come to the private inbox",
            "inbox: another user cannot subscribe to mine",
            "inbox: its own answers still come",
        ],
    )
    .await;
    assert_nothing_lost(&admin).await;
    let config = admin.get_key_value("config").await.unwrap();
    assert_eq!(
        config.get("theme").await.unwrap().as_deref(),
        Some(&b"dark"[..])
    );
}
