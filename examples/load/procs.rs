//! The processes a run drives: nats-server and the service (or a
//! responder), and what they cost.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nats_oidc_callout_test_support::{ConfigToml, Oidc};

/// The service process and what it costs.
pub struct Service {
    pub child: Child,
    pub _dir: tempfile::TempDir,
    /// The service's [http] port (metrics); none for a responder.
    pub http_port: Option<u16>,
}

impl Service {
    pub fn cpu_seconds(&self) -> f64 {
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
    pub fn rss_mib(&self) -> (f64, f64) {
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

pub struct NatsServer {
    pub child: Child,
    pub port: u16,
    pub _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Stops it, waits `down`, starts it again with the same config, and
    /// returns when it accepts connections.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = spawn_nats(self._dir.path(), self.port);
    }
}

pub fn count_lines(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// When the last line with `needle` was logged (its RFC 3339 timestamp).
pub fn last_time(log: &Path, needle: &str) -> std::time::SystemTime {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start_nats(callout: Option<(&str, Option<&str>)>) -> NatsServer {
    start_nats_with(callout, false)
}

/// With `revocation`: JetStream for the callout's account (the revocation
/// list and the session registry) and a system-account user `sys`.
pub fn start_nats_with(callout: Option<(&str, Option<&str>)>, revocation: bool) -> NatsServer {
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
pub fn spawn_nats(dir: &Path, port: u16) -> Child {
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

/// What the service is started with.
pub struct ServiceSetup<'a> {
    pub issuer: &'a str,
    pub account: &'a nkeys::KeyPair,
    pub xkey: Option<&'a nkeys::XKey>,
    pub token_cache: bool,
    /// `[oidc]` keys set as written (TOML values), beside the defaults.
    pub oidc: &'a [(&'a str, &'a str)],
    /// TOML appended to the config.
    pub extra: &'a str,
}

/// Starts the service and waits for /readyz; returns it with the time from
/// spawn to ready.
pub async fn start_service(
    bin: &Path,
    nats_port: u16,
    setup: ServiceSetup<'_>,
) -> (Service, Duration) {
    let ServiceSetup {
        issuer,
        account,
        xkey,
        token_cache,
        oidc: oidc_keys,
        extra,
    } = setup;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let mut oidc = Oidc::dev(issuer).unset("jwks_refetch_cooldown");
    if !token_cache {
        oidc = oidc.set("token_cache_bytes", "0");
    }
    for (key, value) in oidc_keys {
        oidc = oidc.set(key, value);
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
    let service = Service {
        child,
        _dir: dir,
        http_port: Some(http_port),
    };
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
