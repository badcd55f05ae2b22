//! Load tool: starts a development issuer, a real nats-server and the
//! release service binary, drives them, and reports rate, latency, errors,
//! and the service's CPU time and peak RSS.
//!
//! ```sh
//! cargo build --release && cargo run --release --example load -- direct --rate 2500
//! cargo run --release --example load -- direct --rate 0 --duration 10s   # as fast as it answers
//! cargo run --release --example load -- direct --count 1000000           # soak: RSS over time
//! cargo run --release --example load -- connect --clients 2000
//! cargo run --release --example load -- idle --duration 10s
//! cargo run --release --example load -- revoke --clients 1000
//! ```
//!
//! Modes:
//! * `direct`: plays nats-server. Signed authorization requests (a throwaway
//!   server key, a real bearer token each) are published straight onto the
//!   callout subject through a plain nats-server; each answer is read and
//!   counted. `--rate N` sends N per second (open loop); `--rate 0` keeps
//!   `--concurrency` requests outstanding (closed loop).
//! * `connect`: `--clients` real async-nats clients connect at once through
//!   a nats-server with auth callout, each with its token as the password.
//! * `idle`: the service's CPU use while nothing happens.
//! * `connect-rate`: `--clients` async-nats clients connect and close in a
//!   loop through a nats-server with auth callout, first answered by the
//!   service, then by a null responder (a child process of this tool: the
//!   same NATS client and signing code, an allow-all user JWT, no checks:
//!   what any responder must do to answer), then by a checking responder
//!   (the null responder that also verifies the request's signature and
//!   claims and, with `--no-token-cache`, the token's signature: the crypto
//!   every decision must do, and nothing else). Prints connects per second
//!   and CPU per authorization of all three, and the service's ratios.
//! * `revoke`: `--clients` connections of one person (one subject, a
//!   session each) and as many of another, through a nats-server with
//!   JetStream and a system account; one back-channel logout of the
//!   person's subject; prints how long until the last of the person's
//!   connections was closed (and the median), and checks that the other
//!   person's stayed. Twice: the connections remembered by the replica
//!   that admitted them, then by the session registry alone (after a
//!   restart of the service).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nats_oidc_callout::dev::DevIssuer;
use nats_oidc_callout::unix_now;
use nats_oidc_callout_test_support::server_sim::{Answer, ServerSim};
use nats_oidc_callout_test_support::{ConfigToml, Oidc};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// The service binary (default: beside this example, target/release).
    #[arg(long, global = true)]
    service_bin: Option<PathBuf>,
    /// Distinct bearer tokens to cycle through.
    #[arg(long, global = true, default_value_t = 1000)]
    tokens: usize,
    /// Seal requests with xkey, as nats-server does when auth_callout.xkey is set.
    #[arg(long, global = true)]
    xkey: bool,
    /// Run the service with `oidc.token_cache_bytes = 0`, so every token's
    /// signature is verified (the first connect of each client).
    #[arg(long, global = true)]
    no_token_cache: bool,
}

#[derive(Subcommand)]
enum Mode {
    Direct {
        /// Requests per second; 0 = as fast as answers come (closed loop).
        #[arg(long, default_value_t = 2500)]
        rate: u64,
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
        /// Stop after this many requests instead of after --duration.
        #[arg(long)]
        count: Option<u64>,
        /// Outstanding requests in closed-loop mode.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    Revoke {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
    Connect {
        #[arg(long, default_value_t = 2000)]
        clients: usize,
    },
    Idle {
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
    },
    /// nats-server stopped and started again `--rounds` times, down for
    /// `--down` each time: how long after it accepts connections again the
    /// service is connected (by the service's log).
    Restart {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value = "1s")]
        down: humantime::Duration,
    },
    ConnectRate {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// How long each responder is measured, per round.
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
        /// Service, then null responder, this many times.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Answers authorization requests with an allow-all user JWT, checking
    /// nothing unless told to (started by `connect-rate`).
    #[command(hide = true)]
    NullResponder {
        #[arg(long)]
        nats_port: u16,
        #[arg(long)]
        seed: String,
        #[arg(long)]
        xkey_seed: Option<String>,
        /// Verify each request's signature and claims.
        #[arg(long)]
        verify_requests: bool,
        /// Verify each bearer token's RS256 signature with this JWK.
        #[arg(long)]
        token_jwk: Option<String>,
    },
}

/// The service process and what it costs.
struct Service {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Service {
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields overall.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
            .unwrap_or(0.0);
        ticks / 100.0
    }

    /// (current RSS, peak RSS) in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (kib("VmRSS:"), kib("VmHWM:"))
    }
}

impl Drop for Service {
    /// SIGTERM first, as a supervisor stops it (and so a profiler wrapping
    /// the binary can write its output); SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct NatsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Stops it, waits `down`, starts it again with the same config, and
    /// returns when it accepts connections.
    fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = spawn_nats(self._dir.path(), self.port);
    }
}

fn count_lines(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// When the last line with `needle` was logged (its RFC 3339 timestamp).
fn last_time(log: &Path, needle: &str) -> std::time::SystemTime {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().rev().find(|l| l.contains(needle)).unwrap();
    let stamp = line.split_whitespace().next().unwrap();
    humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{stamp:?}: {e}"))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nats(callout: Option<(&str, Option<&str>)>) -> NatsServer {
    start_nats_with(callout, false)
}

/// With `revocation`: JetStream for the callout's account (the revocation
/// list and the session registry) and a system-account user `sys`.
fn start_nats_with(callout: Option<(&str, Option<&str>)>, revocation: bool) -> NatsServer {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let auth = match callout {
        None => "authorization { users: [ { user: auth, password: authpw } ] }".to_string(),
        Some((issuer, xkey)) if revocation => format!(
            "jetstream {{ store_dir: \"{}\" }}\n\
             accounts {{ AUTH {{ jetstream: enabled, users: [ {{ user: auth, password: authpw }} ] }}, APP {{}}, SYS {{ users: [ {{ user: sys, password: sys }} ] }} }}\n\
             system_account: SYS\n\
             authorization {{ auth_callout {{ issuer: {issuer}, auth_users: [ auth, sys ], account: AUTH {} }} }}",
            dir.path().join("js").display(),
            xkey.map(|x| format!(", xkey: {x}")).unwrap_or_default()
        ),
        Some((issuer, xkey)) => format!(
            "accounts {{ AUTH {{ users: [ {{ user: auth, password: authpw }} ] }}, APP {{}}, SYS {{}} }}\n\
             system_account: SYS\n\
             authorization {{ auth_callout {{ issuer: {issuer}, auth_users: [ auth ], account: AUTH {} }} }}",
            xkey.map(|x| format!(", xkey: {x}")).unwrap_or_default()
        ),
    };
    let conf = format!(
        "listen: 127.0.0.1:{port}\nmax_control_line: 64KB\nmax_connections: 100000\n{auth}\n"
    );
    std::fs::write(dir.path().join("nats.conf"), conf).unwrap();
    NatsServer {
        child: spawn_nats(dir.path(), port),
        port,
        _dir: dir,
    }
}

/// Runs nats-server with `dir`'s nats.conf (its log appended to `dir`'s
/// nats.log) and returns once it accepts connections on `port`: polled
/// finely, since `restart` times from that moment.
fn spawn_nats(dir: &Path, port: u16) -> Child {
    let bin = nats_oidc_callout::dev::locate_or_install(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools"),
    )
    .unwrap_or_else(|e| panic!("no nats-server: {e}"));
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("nats.log"))
        .unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(dir.join("nats.conf"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start nats-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_micros(200));
    }
    child
}

/// Starts the service and waits for /readyz; returns it with the time from
/// spawn to ready.
async fn start_service(
    bin: &Path,
    nats_port: u16,
    issuer: &str,
    account: &nkeys::KeyPair,
    xkey: Option<&nkeys::XKey>,
    token_cache: bool,
    extra: &str,
) -> (Service, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let mut oidc = Oidc::dev(issuer).unset("jwks_refetch_cooldown");
    if !token_cache {
        oidc = oidc.set("token_cache_bytes", "0");
    }
    let mut config = ConfigToml::new()
        .nats_login(&format!("nats://127.0.0.1:{nats_port}"))
        .issuer_seed(&account.seed().unwrap())
        .oidc(oidc)
        .section(&format!("[http]\nlisten = \"127.0.0.1:{http_port}\""))
        .role(
            "reader",
            "pub.allow = [\"_INBOX.>\"]\nsub.allow = [\"orders.>\", \"_INBOX.>\"]\nsub.deny  = [\"orders.secret.>\"]",
        );
    if let Some(x) = xkey {
        config = config.xkey_seed(&x.seed().unwrap());
    }
    if !extra.is_empty() {
        config = config.section(extra);
    }
    let config = config.to_string();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
    let started = Instant::now();
    let child = Command::new(bin)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let service = Service { child, _dir: dir };
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{http_port}/readyz");
    loop {
        if let Ok(r) = http.get(&url).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the service was not ready within 20 s; its log: {}",
            std::fs::read_to_string(service._dir.path().join("service.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (service, started.elapsed())
}

#[derive(Default)]
struct Tally {
    latencies_us: Mutex<Vec<u64>>,
    allowed: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn record(&self, took: Duration, outcome: Result<Answer, String>) {
        self.latencies_us
            .lock()
            .unwrap()
            .push(took.as_micros() as u64);
        let error = match outcome {
            Ok(Answer::Allowed) => {
                self.allowed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Answer::Refused(e)) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                e
            }
            Ok(Answer::Unreadable(e)) | Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                e
            }
        };
        self.first_error.lock().unwrap().get_or_insert(error);
    }

    fn report(&self, elapsed: Duration) {
        let mut l = self.latencies_us.lock().unwrap().clone();
        l.sort_unstable();
        let at = |q: f64| {
            l.get(((l.len().max(1) - 1) as f64 * q) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        let n = l.len() as f64;
        println!(
            "answers: {} in {:.2}s = {:.0}/s; allowed {}, refused {}, errors {}",
            l.len(),
            elapsed.as_secs_f64(),
            n / elapsed.as_secs_f64(),
            self.allowed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed)
        );
        println!(
            "latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
            at(0.5),
            at(0.99),
            at(1.0)
        );
        if let Some(e) = self.first_error.lock().unwrap().as_ref() {
            println!("first refusal/error: {e}");
        }
    }
}

fn report_service(service: &Service, cpu_before: f64, elapsed: Duration) {
    let cpu = service.cpu_seconds() - cpu_before;
    let (rss, peak) = service.rss_mib();
    println!(
        "service: cpu {:.2}s ({:.0}% of one core), rss {:.1} MiB, peak rss {:.1} MiB",
        cpu,
        100.0 * cpu / elapsed.as_secs_f64(),
        rss,
        peak
    );
}

/// The null responder: open (when sealed) and read the request, sign an
/// allow-all user JWT and the response with the crate's own code, answer.
/// What the null responder checks.
#[derive(Clone, Default)]
struct Checks {
    requests: bool,
    token_key: Option<jsonwebtoken::DecodingKey>,
}

async fn null_responder(nats_port: u16, seed: &str, xkey_seed: Option<&str>, checks: Checks) {
    use futures::StreamExt;
    use nats_oidc_callout::nats::{
        build_response, issue_user_jwt, Answer, ConnectionLimits, Permission, Placement, Signer,
        UserGrant, UserLimits,
    };
    let issuer = nats_oidc_callout::nats::SigningKey::new(
        nkeys::KeyPair::from_seed(seed).expect("an account seed"),
    )
    .expect("a key pair with its seed");
    let issuer_public = issuer.public_key().to_string();
    let ours = xkey_seed.map(|s| {
        nats_oidc_callout::nats::OurXkey::new(nkeys::XKey::from_seed(s).expect("an xkey seed"))
            .expect("an xkey with its seed")
    });
    let client = async_nats::ConnectOptions::with_user_and_password("auth".into(), "authpw".into())
        .connect(format!("nats://127.0.0.1:{nats_port}"))
        .await
        .expect("the null responder connects");
    let mut requests = client
        .queue_subscribe("$SYS.REQ.USER.AUTH", "null".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let everything = Permission {
        allow: vec![">".into()],
        deny: Vec::new(),
    };
    let anywhere = ConnectionLimits::default();
    println!("ready");
    while let Some(msg) = requests.next().await {
        let Some(reply) = msg.reply else { continue };
        let header = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Server-Xkey"))
            .map(|v| v.as_str());
        let Ok(opened) = nats_oidc_callout::nats::open_request(&msg.payload, header, ours.as_ref())
        else {
            continue;
        };
        let now = unix_now();
        let server_xkey = opened.server_xkey().cloned();
        let to = if checks.requests {
            let Ok(request) = opened.verify(&issuer_public, now as i64) else {
                continue;
            };
            if let Some(key) = &checks.token_key {
                let Some((signed, signature)) = request
                    .claims
                    .nats
                    .connect_opts
                    .bearer_token()
                    .and_then(|t| t.rsplit_once('.'))
                else {
                    continue;
                };
                let good = jsonwebtoken::crypto::verify(
                    signature,
                    signed.as_bytes(),
                    key,
                    jsonwebtoken::Algorithm::RS256,
                );
                if !matches!(good, Ok(true)) {
                    continue;
                }
            }
            request.claims.addressee()
        } else {
            opened.addressee_unverified()
        };
        let user = issue_user_jwt(
            &UserGrant {
                user_nkey: &to.user_nkey,
                name: "null",
                placement: Placement::Named("APP"),
                publish: &everything,
                subscribe: &everything,
                resp: None,
                limits: UserLimits::default(),
                connection: &anywhere,
                expires: now + 3600,
            },
            &issuer,
            now,
        );
        let seal = ours.as_ref().zip(server_xkey.as_ref());
        let body = build_response(
            &to,
            Answer::Allow { user_jwt: &user },
            &Signer {
                key: &issuer,
                account: &issuer_public,
            },
            seal,
            now,
        );
        let _ = client.publish(reply, body.into()).await;
    }
}

fn start_null_responder(
    nats_port: u16,
    account: &nkeys::KeyPair,
    xkey: Option<&nkeys::XKey>,
    checking: Option<Option<&serde_json::Value>>,
) -> Service {
    use std::io::BufRead;
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("null-responder")
        .arg("--nats-port")
        .arg(nats_port.to_string())
        .arg("--seed")
        .arg(account.seed().unwrap());
    if let Some(x) = xkey {
        cmd.arg("--xkey-seed").arg(x.seed().unwrap());
    }
    if let Some(token_jwk) = checking {
        cmd.arg("--verify-requests");
        if let Some(jwk) = token_jwk {
            cmd.arg("--token-jwk").arg(jwk.to_string());
        }
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the null responder");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the null responder did not start");
    Service {
        child,
        _dir: tempfile::tempdir().unwrap(),
    }
}

/// Connects per second, errors, and the responder's CPU seconds while
/// `clients` tasks connect and close for `duration`.
async fn connect_loop(
    url: &str,
    tokens: &Arc<Vec<String>>,
    clients: usize,
    duration: Duration,
    responder: &Service,
) -> (u64, u64, Duration, f64) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = responder.cpu_seconds();
    let begin = Instant::now();
    let deadline = begin + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (url, tokens, next, errors, done) = (
            url.to_string(),
            tokens.clone(),
            next.clone(),
            errors.clone(),
            done.clone(),
        );
        workers.spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                let token = tokens[n % tokens.len()].clone();
                match async_nats::ConnectOptions::with_user_and_password("load".into(), token)
                    .connection_timeout(Duration::from_secs(5))
                    .max_reconnects(Some(0))
                    .connect(url.as_str())
                    .await
                {
                    Ok(client) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        drop(client);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = begin.elapsed();
    (
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        elapsed,
        responder.cpu_seconds() - cpu_before,
    )
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Mode::NullResponder {
        nats_port,
        seed,
        xkey_seed,
        verify_requests,
        token_jwk,
    } = &cli.mode
    {
        let checks = Checks {
            requests: *verify_requests,
            token_key: token_jwk.as_deref().map(|j| {
                let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(j).expect("a JWK");
                jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("an RSA JWK")
            }),
        };
        // On a worker thread, as the service runs: from the main thread
        // every message would cost a wake-up across threads.
        let (port, seed, xkey_seed) = (*nats_port, seed.clone(), xkey_seed.clone());
        tokio::spawn(
            async move { null_responder(port, &seed, xkey_seed.as_deref(), checks).await },
        )
        .await
        .expect("the null responder runs");
        return;
    }
    let bin = cli.service_bin.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent()
            .and_then(Path::parent)
            .unwrap()
            .join("nats-oidc-callout")
    });
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --release` first or pass --service-bin",
        bin.display()
    );
    let issuer = DevIssuer::start(0).await.unwrap();
    let account = nkeys::KeyPair::new_account();
    let callout_xkey = nkeys::XKey::new();
    let xkey = cli.xkey.then_some(&callout_xkey);
    let started = Instant::now();
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..cli.tokens.max(1))
            .map(|i| issuer.token(&format!("load{i}"), "nats", &["reader"], 3600))
            .collect(),
    );
    println!(
        "{} tokens signed in {:.1}s; service {}",
        tokens.len(),
        started.elapsed().as_secs_f64(),
        bin.display()
    );
    let issuer_url = issuer.issuer();
    let token_jwk = issuer.public_jwk(&issuer.current_kid(jsonwebtoken::Algorithm::RS256));
    let start = |nats_port| {
        start_service(
            &bin,
            nats_port,
            &issuer_url,
            &account,
            xkey,
            !cli.no_token_cache,
            "",
        )
    };
    match cli.mode {
        Mode::Direct {
            rate,
            duration,
            count,
            concurrency,
        } => {
            let nats = start_nats(None);
            let (service, ready) = start(nats.port).await;
            println!("startup to ready: {:.0} ms", ready.as_secs_f64() * 1000.0);
            let client =
                async_nats::ConnectOptions::with_user_and_password("auth".into(), "authpw".into())
                    .connect(format!("nats://127.0.0.1:{}", nats.port))
                    .await
                    .unwrap();
            let sim = Arc::new(ServerSim::new(&account.public_key()));
            let callout_xkey =
                Arc::new(nkeys::XKey::from_seed(&callout_xkey.seed().unwrap()).unwrap());
            let sealed = cli.xkey;
            let tally = Arc::new(Tally::default());
            let limit = count.unwrap_or(u64::MAX);
            let deadline = if count.is_some() {
                None
            } else {
                Some(Instant::now() + Duration::from(duration))
            };
            let cpu_before = service.cpu_seconds();
            let begin = Instant::now();
            let sent = Arc::new(AtomicU64::new(0));
            let one = {
                let (client, sim, tally, tokens, callout_xkey) = (
                    client.clone(),
                    sim.clone(),
                    tally.clone(),
                    tokens.clone(),
                    callout_xkey.clone(),
                );
                move |n: u64| {
                    let (client, sim, tally, tokens, callout_xkey) = (
                        client.clone(),
                        sim.clone(),
                        tally.clone(),
                        tokens.clone(),
                        callout_xkey.clone(),
                    );
                    async move {
                        let token = &tokens[(n as usize) % tokens.len()];
                        let now = unix_now();
                        let t = Instant::now();
                        let reply = if sealed {
                            let (body, header) = sim.sealed_request(token, now, &callout_xkey);
                            let mut h = async_nats::HeaderMap::new();
                            h.insert("Nats-Server-Xkey", header.as_str());
                            tokio::time::timeout(
                                Duration::from_secs(2),
                                client.request_with_headers("$SYS.REQ.USER.AUTH", h, body.into()),
                            )
                            .await
                        } else {
                            tokio::time::timeout(
                                Duration::from_secs(2),
                                client
                                    .request("$SYS.REQ.USER.AUTH", sim.request(token, now).into()),
                            )
                            .await
                        };
                        let outcome = match reply {
                            Ok(Ok(m)) => Ok(sim.read_answer(&m.payload, Some(&callout_xkey))),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err("no answer within 2 s".into()),
                        };
                        tally.record(t.elapsed(), outcome);
                    }
                }
            };
            let mut next_rss = 100_000u64;
            let done = move |n: u64| n >= limit || deadline.is_some_and(|d| Instant::now() >= d);
            if rate == 0 {
                let mut workers = tokio::task::JoinSet::new();
                for _ in 0..concurrency {
                    let one = one.clone();
                    let sent = sent.clone();
                    workers.spawn(async move {
                        loop {
                            let n = sent.fetch_add(1, Ordering::Relaxed);
                            if done(n) {
                                break;
                            }
                            one(n).await;
                        }
                    });
                }
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                while !workers.is_empty() {
                    tokio::select! {
                        _ = workers.join_next() => {}
                        _ = tick.tick() => {
                            let n = sent.load(Ordering::Relaxed);
                            if n >= next_rss {
                                let (rss, peak) = service.rss_mib();
                                println!("after {n:>8} requests: rss {rss:.1} MiB, peak {peak:.1} MiB, {:.0}/s so far", n as f64 / begin.elapsed().as_secs_f64());
                                next_rss += 100_000;
                            }
                        }
                    }
                }
            } else {
                let mut in_flight = tokio::task::JoinSet::new();
                let per_ms = rate as f64 / 1000.0;
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut n = 0u64;
                'send: loop {
                    tick.tick().await;
                    let due = (begin.elapsed().as_secs_f64() * 1000.0 * per_ms) as u64;
                    while n < due {
                        if done(n) {
                            break 'send;
                        }
                        in_flight.spawn(one(n));
                        n += 1;
                    }
                    while in_flight.try_join_next().is_some() {}
                }
                while in_flight.join_next().await.is_some() {}
            }
            let elapsed = begin.elapsed();
            println!(
                "direct mode, {}, {} tokens, {}",
                if rate == 0 {
                    format!("closed loop x{concurrency}")
                } else {
                    format!("{rate}/s offered")
                },
                tokens.len(),
                if sealed { "xkey" } else { "no xkey" }
            );
            tally.report(elapsed);
            report_service(&service, cpu_before, elapsed);
        }
        Mode::Connect { clients } => {
            let xkey_public = callout_xkey.public_key();
            let nats = start_nats(Some((
                &account.public_key(),
                cli.xkey.then_some(xkey_public.as_str()),
            )));
            let (service, ready) = start(nats.port).await;
            println!("startup to ready: {:.0} ms", ready.as_secs_f64() * 1000.0);
            let url = format!("nats://127.0.0.1:{}", nats.port);
            let tally = Arc::new(Tally::default());
            let cpu_before = service.cpu_seconds();
            let begin = Instant::now();
            let tasks: Vec<_> = (0..clients)
                .map(|i| {
                    let url = url.clone();
                    let token = tokens[i % tokens.len()].clone();
                    let tally = tally.clone();
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let result = async_nats::ConnectOptions::with_user_and_password(
                            "load".into(),
                            token,
                        )
                        .connection_timeout(Duration::from_secs(10))
                        .connect(url)
                        .await;
                        let took = t.elapsed();
                        match result {
                            Ok(c) => {
                                tally.record(took, Ok(Answer::Allowed));
                                Some(c)
                            }
                            Err(e) => {
                                tally.record(took, Err(e.to_string()));
                                None
                            }
                        }
                    })
                })
                .collect();
            let mut held = Vec::new();
            for t in tasks {
                held.push(t.await.unwrap());
            }
            let elapsed = begin.elapsed();
            println!(
                "connect mode: {clients} clients at once, {}",
                if cli.xkey { "xkey" } else { "no xkey" }
            );
            tally.report(elapsed);
            report_service(&service, cpu_before, elapsed);
            drop(held);
        }
        Mode::ConnectRate {
            clients,
            duration,
            rounds,
        } => {
            let xkey_public = callout_xkey.public_key();
            let nats = start_nats(Some((
                &account.public_key(),
                cli.xkey.then_some(xkey_public.as_str()),
            )));
            let url = format!("nats://127.0.0.1:{}", nats.port);
            let d: Duration = duration.into();
            println!(
                "connect-rate: {clients} clients connect and close for {:.0}s per responder, {}, token cache {}",
                d.as_secs_f64(),
                if cli.xkey { "xkey" } else { "no xkey" },
                if cli.no_token_cache { "off (every token verified)" } else { "on (tokens seen before)" }
            );
            // Every token connects once first: with the cache on, the
            // measured connects are all "seen before"; either way both
            // responders start warm.
            let warm = Duration::from_secs(2);
            for round in 1..=rounds {
                let (service, _) = start(nats.port).await;
                connect_loop(&url, &tokens, clients, warm, &service).await;
                let (s_n, s_err, s_t, s_cpu) =
                    connect_loop(&url, &tokens, clients, d, &service).await;
                drop(service);
                let null = start_null_responder(nats.port, &account, xkey, None);
                connect_loop(&url, &tokens, clients, warm, &null).await;
                let (n_n, n_err, n_t, n_cpu) = connect_loop(&url, &tokens, clients, d, &null).await;
                drop(null);
                let checking = start_null_responder(
                    nats.port,
                    &account,
                    xkey,
                    Some(cli.no_token_cache.then_some(&token_jwk)),
                );
                connect_loop(&url, &tokens, clients, warm, &checking).await;
                let (c_n, c_err, c_t, c_cpu) =
                    connect_loop(&url, &tokens, clients, d, &checking).await;
                drop(checking);
                let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64();
                let per = |cpu: f64, n: u64| cpu * 1e6 / n.max(1) as f64;
                println!(
                    "round {round}: service {:.0} connects/s ({s_err} errors), {:.0} µs CPU each; null responder {:.0} connects/s ({n_err} errors), {:.0} µs CPU each",
                    rate(s_n, s_t),
                    per(s_cpu, s_n),
                    rate(n_n, n_t),
                    per(n_cpu, n_n)
                );
                println!(
                    "round {round}: service ÷ null: CPU per authorization {:.2}×, connect rate {:.2}×",
                    per(s_cpu, s_n) / per(n_cpu, n_n),
                    rate(s_n, s_t) / rate(n_n, n_t)
                );
                println!(
                    "round {round}: checking responder {:.0} connects/s ({c_err} errors), {:.0} µs CPU each; service ÷ checking: CPU per authorization {:.2}×, connect rate {:.2}×",
                    rate(c_n, c_t),
                    per(c_cpu, c_n),
                    per(s_cpu, s_n) / per(c_cpu, c_n),
                    rate(s_n, s_t) / rate(c_n, c_t)
                );
            }
        }
        Mode::Revoke { clients } => {
            let xkey_public = callout_xkey.public_key();
            let nats = start_nats_with(
                Some((
                    &account.public_key(),
                    cli.xkey.then_some(xkey_public.as_str()),
                )),
                true,
            );
            let url = format!("nats://127.0.0.1:{}", nats.port);
            let backchannel = free_port();
            let revocation = format!(
                "[revocation]\nkv_bucket = \"revocations\"\nsystem_user = \"sys\"\nsystem_password = \"sys\"\nbackchannel_listen = \"127.0.0.1:{backchannel}\""
            );
            let start = || {
                start_service(
                    &bin,
                    nats.port,
                    &issuer_url,
                    &account,
                    xkey,
                    !cli.no_token_cache,
                    &revocation,
                )
            };
            println!("revoke: {clients} connections of one person, {clients} of another");
            let (service, _) = start().await;
            revoke_round(
                "remembered by the replica",
                &issuer,
                &url,
                clients,
                backchannel,
            )
            .await;
            // A second round on connections filed before a restart: only
            // the session registry knows them then. Tokens of the first
            // round's second are covered; wait for the next one.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let held = connect_victims(&issuer, &url, clients, "r2").await;
            // The registry is written behind the answers.
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(service);
            let (_service, _) = start().await;
            revoke_held(
                "in the session registry only (after a restart)",
                &issuer,
                held,
                backchannel,
            )
            .await;
        }
        Mode::NullResponder { .. } => unreachable!("handled before any setup"),
        Mode::Restart { rounds, down } => {
            let mut nats = start_nats(Some((&account.public_key(), None)));
            let (service, _) = start(nats.port).await;
            let log = service._dir.path().join("service.log");
            let mut lags = Vec::new();
            for round in 1..=rounds {
                let before = count_lines(&log, "connected to NATS");
                nats.restart(down.into());
                let accepting = std::time::SystemTime::now();
                let deadline = Instant::now() + Duration::from_secs(30);
                while count_lines(&log, "connected to NATS") <= before {
                    assert!(Instant::now() < deadline, "the service did not reconnect");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let connected = last_time(&log, "connected to NATS");
                let lag = connected
                    .duration_since(accepting)
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .unwrap_or(0.0);
                println!("round {round}: connected {lag:.1} ms after nats-server accepted again");
                lags.push(lag);
            }
            lags.sort_by(f64::total_cmp);
            println!(
                "restart: {rounds} rounds, down {}; reconnected after median {:.1} ms, max {:.1} ms",
                humantime::format_duration(down.into()),
                lags[lags.len() / 2],
                lags[lags.len() - 1]
            );
        }
        Mode::Idle { duration } => {
            let nats = start_nats(None);
            let (service, ready) = start(nats.port).await;
            println!("startup to ready: {:.0} ms", ready.as_secs_f64() * 1000.0);
            let cpu_before = service.cpu_seconds();
            let d: Duration = duration.into();
            tokio::time::sleep(d).await;
            println!("idle for {:.0}s", d.as_secs_f64());
            report_service(&service, cpu_before, d);
        }
    }
}

/// Clients of one subject (`user-victim`, a session each) and of another
/// (`user-bystander`), each noting when it was first disconnected.
struct Held {
    victims: Vec<(async_nats::Client, Arc<Mutex<Option<Instant>>>)>,
    bystanders: Vec<(async_nats::Client, Arc<Mutex<Option<Instant>>>)>,
}

async fn connect_one(
    url: &str,
    token: String,
) -> (async_nats::Client, Arc<Mutex<Option<Instant>>>) {
    let closed: Arc<Mutex<Option<Instant>>> = Arc::default();
    let noted = closed.clone();
    let client = async_nats::ConnectOptions::with_user_and_password("load".into(), token)
        .connection_timeout(Duration::from_secs(10))
        .event_callback(move |event| {
            let noted = noted.clone();
            async move {
                if matches!(event, async_nats::Event::Disconnected) {
                    noted.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
        })
        .connect(url)
        .await
        .expect("a load client connects");
    (client, closed)
}

async fn connect_victims(issuer: &DevIssuer, url: &str, clients: usize, round: &str) -> Held {
    let token = |user: &str, i: usize| {
        issuer.token_with_sid(
            user,
            "nats",
            &["reader"],
            3600,
            &format!("{round}-{user}-{i}"),
        )
    };
    let mut held = Held {
        victims: Vec::new(),
        bystanders: Vec::new(),
    };
    for chunk in (0..clients).collect::<Vec<_>>().chunks(100) {
        let victims = chunk.iter().map(|&i| connect_one(url, token("victim", i)));
        let bystanders = chunk
            .iter()
            .map(|&i| connect_one(url, token("bystander", i)));
        held.victims
            .extend(futures::future::join_all(victims).await);
        held.bystanders
            .extend(futures::future::join_all(bystanders).await);
    }
    held
}

async fn revoke_round(what: &str, issuer: &DevIssuer, url: &str, clients: usize, backchannel: u16) {
    let held = connect_victims(issuer, url, clients, "r1").await;
    revoke_held(what, issuer, held, backchannel).await;
}

/// Logs `user-victim` out and reports how long until each of its
/// connections was closed.
async fn revoke_held(what: &str, issuer: &DevIssuer, held: Held, backchannel: u16) {
    let logout = issuer.logout_token(Some("user-victim"), None, "nats");
    let begin = Instant::now();
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{backchannel}/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={logout}"))
        .send()
        .await
        .expect("the back-channel endpoint answers");
    assert_eq!(answer.status(), 200, "the logout is accepted");
    let accepted = begin.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    let closed_at = |h: &[(async_nats::Client, Arc<Mutex<Option<Instant>>>)]| -> Vec<Instant> {
        h.iter().filter_map(|(_, c)| *c.lock().unwrap()).collect()
    };
    while closed_at(&held.victims).len() < held.victims.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut took: Vec<f64> = closed_at(&held.victims)
        .iter()
        .map(|t| t.saturating_duration_since(begin).as_secs_f64() * 1000.0)
        .collect();
    took.sort_by(f64::total_cmp);
    // The other person's connections get a second more to be closed by
    // mistake before they are counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bystanders_closed = closed_at(&held.bystanders).len();
    println!(
        "revoke ({what}): logout accepted in {:.0} ms; {}/{} connections closed, median {:.0} ms, last {:.0} ms after the logout was sent; {bystanders_closed}/{} of the other person's closed",
        accepted.as_secs_f64() * 1000.0,
        took.len(),
        held.victims.len(),
        took.get(took.len() / 2).copied().unwrap_or(f64::NAN),
        took.last().copied().unwrap_or(f64::NAN),
        held.bystanders.len(),
    );
}
