//! The grants of `jetstream.rs` and `connection_rules.rs` with a second
//! and a third client library, nats-py (tests/clients/grants.py) and
//! nats.js (tests/clients/js/grants.mjs): the compiled subjects must serve
//! the calls each library makes (nats-py's KV watch, keys and history ask
//! for consumer info, which async-nats does not; its ephemeral pull
//! consumers are named in the create subject; nats.js looks a durable up
//! before it fetches and puts KV values through the API prefix). And the
//! README's reconnect recipes for nats-py and nats.js
//! (examples/recipes/reconnect.py, reconnect.mjs) as long-running programs
//! whose tokens expire every few seconds.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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

/// The lifetime of the reconnect recipes' tokens (seconds).
const SHORT_TTL: u64 = 4;

/// What a reconnect recipe may do: answer requests on `svc.echo`.
const ECHO_ROLE: &str = r#"
[roles.echo]
sub.allow = ["svc.echo"]
resp = { max = 1 }
"#;

/// A recipe of examples/recipes/ running as a child process, its stdout and
/// stderr in one file; killed when dropped.
struct Recipe {
    child: std::process::Child,
    output: PathBuf,
}

impl Recipe {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Panics, with what it printed, once it has exited: it must run on.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the recipe exited ({status}):\n{}", self.output());
        }
    }
}

impl Drop for Recipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- recipe output ----\n{}", self.output());
        }
    }
}

/// Runs a reconnect recipe (`recipe`: the interpreter and script) as a
/// program whose token lives SHORT_TTL seconds: a token file that a
/// sidecar task renews every half second from the development issuer, as
/// `nats-oidc-callout token` would. After each expiry (nats-server sends
/// `-ERR 'User Authentication Expired'` and closes the connection) the
/// program must log in again (a new admission of its user in the service's
/// log) and answer a request sent after that. Four expiries: two with the
/// file fresh; one while the sidecar is stopped, so that the program's
/// attempts are refused (`token_expired`) at least twice before a fresh
/// token comes; one more with the file fresh. No step is timed: each wait
/// is bounded only so that a program that stopped working fails the test
/// instead of hanging it.
async fn the_recipe_outlives_its_tokens(mut recipe: Command, user: &str) {
    let stack = Stack::start(ServiceOptions {
        roles: format!("{}{ECHO_ROLE}", default_roles()),
        ..ServiceOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");

    // The sidecar: a new token every 500 ms while `renewing`, written
    // whole (a new file renamed over the old).
    let renewing = Arc::new(AtomicBool::new(true));
    let mint = format!("/token?user={user}&roles=echo&aud={AUDIENCE}&ttl={SHORT_TTL}");
    let issuer_port = stack.issuer.addr().port();
    let renew = {
        let token_file = token_file.clone();
        move || {
            let (token_file, mint) = (token_file.clone(), mint.clone());
            async move {
                let (status, token) = http_get(issuer_port, &mint).await;
                assert_eq!(status, 200, "{token}");
                std::fs::write(token_file.with_extension("new"), token).unwrap();
                std::fs::rename(token_file.with_extension("new"), &token_file).unwrap();
            }
        }
    };
    renew().await;
    let sidecar = tokio::spawn({
        let renewing = renewing.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if renewing.load(Ordering::SeqCst) {
                    renew().await;
                }
            }
        }
    });

    recipe.arg(stack.url()).arg(&token_file).arg("svc.echo");
    if let Some(creds) = sentinel_for(&stack.url()) {
        recipe.arg(creds);
    }
    let output = dir.path().join("output");
    let out = std::fs::File::create(&output).unwrap();
    recipe
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(std::process::Stdio::null());
    let mut program = Recipe {
        child: recipe.spawn().expect("the recipe starts"),
        output,
    };
    let admin = connect(&stack.url(), &stack.token("root", &["admin"]))
        .await
        .unwrap();

    let lines_with = |needles: &[&str]| {
        log_lines(&stack.service.log)
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    };
    let user_field = format!("user={user} ");
    let admissions = || lines_with(&["result=\"allowed\"", &user_field]);
    let refusals = || lines_with(&["code=\"token_expired\""]);

    answers(&admin, &mut program, "before the first expiry").await;
    let mut logins = admissions();
    for expiry in ["first", "second"] {
        let when = format!("after the {expiry} expiry");
        logins = logged_in_again(&mut program, logins, admissions, &when).await;
        answers(&admin, &mut program, &when).await;
    }

    // The sidecar stops: the file's token expires too, and the program's
    // attempts with it are refused until the sidecar runs again.
    renewing.store(false, Ordering::SeqCst);
    let refused = refusals();
    wait_for(
        &mut program,
        "two refused attempts with the stale token",
        || refusals() >= refused + 2,
    )
    .await;
    renewing.store(true, Ordering::SeqCst);
    let when = "once the file is fresh again";
    logins = logged_in_again(&mut program, admissions(), admissions, when).await;
    answers(&admin, &mut program, when).await;

    let when = "after the last expiry";
    logged_in_again(&mut program, logins, admissions, when).await;
    answers(&admin, &mut program, when).await;
    sidecar.abort();
    program.assert_running();
    println!("{}", program.output());
}

/// Waits (bounded only as a hang guard) until `done`, failing as soon as
/// the recipe has exited.
async fn wait_for(program: &mut Recipe, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        program.assert_running();
        assert!(
            Instant::now() < deadline,
            "no {what} after 60 s; the recipe printed:\n{}",
            program.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the service has admitted the recipe's user more than
/// `before` times (its connection expired and it logged in again); the
/// count now.
async fn logged_in_again(
    program: &mut Recipe,
    before: usize,
    admissions: impl Fn() -> usize,
    when: &str,
) -> usize {
    wait_for(program, &format!("login {when}"), || admissions() > before).await;
    admissions()
}

/// A request sent now is answered with its own data (retried, as the
/// program may be between two connections).
async fn answers(admin: &TestClient, program: &mut Recipe, when: &str) {
    let payload = format!("ping {when}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        program.assert_running();
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            admin.client.request("svc.echo", payload.clone().into()),
        )
        .await;
        match reply {
            Ok(Ok(m)) => {
                assert_eq!(m.payload, payload.as_bytes(), "{when}");
                return;
            }
            Ok(Err(e)) => assert!(
                Instant::now() < deadline,
                "no answer {when} after 60 s: {e}; the recipe printed:\n{}",
                program.output()
            ),
            Err(_) => assert!(
                Instant::now() < deadline,
                "no answer {when} after 60 s; the recipe printed:\n{}",
                program.output()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_reconnect_recipe_outlives_its_tokens() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let mut recipe = Command::new(python);
    recipe.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/recipes/reconnect.py"
    ));
    the_recipe_outlives_its_tokens(recipe, "py-recipe").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_js_reconnect_recipe_outlives_its_tokens() {
    let js = tokio::task::spawn_blocking(nats_js).await.unwrap();
    // Node resolves a module's imports from the module's own directory:
    // the recipe runs from a copy beside a link to the installed nats.js.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/recipes/reconnect.mjs"
        ),
        dir.path().join("reconnect.mjs"),
    )
    .unwrap();
    std::os::unix::fs::symlink(js.join("node_modules"), dir.path().join("node_modules")).unwrap();
    let mut recipe = Command::new("node");
    recipe.arg(dir.path().join("reconnect.mjs"));
    the_recipe_outlives_its_tokens(recipe, "js-recipe").await;
}
