//! Test harness: a real nats-server with auth callout, the development OIDC
//! issuer, the service binary, and real async-nats clients.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{ConnectOptions, Event};
use tokio::sync::mpsc;

pub use nats_oidc_callout::dev::DevIssuer;
pub use nats_oidc_callout::dev::OperatorSetup;
pub use nats_oidc_callout::policy::Layout;
pub use nats_oidc_callout_test_support::{ConfigToml, Oidc};

pub mod cluster;
pub mod fixtures;
pub mod pki;

pub use nats_oidc_callout_test_support::config::AUDIENCE;

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The nats-server binary, found or installed into `.tools` once per test
/// process (see `nats_server::locate_or_install`).
pub fn nats_server_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        nats_oidc_callout::dev::locate_or_install(&project_root().join(".tools"))
            .unwrap_or_else(|e| panic!("no nats-server for the tests: {e}"))
    })
    .clone()
}

/// nats-server's version as (major, minor, patch).
pub fn nats_server_version() -> (u32, u32, u32) {
    let out = Command::new(nats_server_bin())
        .arg("--version")
        .output()
        .expect("nats-server --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .unwrap_or_else(|| panic!("no version in {text:?}"));
    let mut n = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` distinct free ports: each held until all are chosen (one at a time,
/// the system may hand the same port out twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A wait for something that must happen is a hang guard, never a speed:
/// on a machine busy with other work it may take longer than expected, and
/// a wait that ends early costs nothing.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Waits until `path` contains `needle`, or panics after `timeout` (at
/// least `HANG_GUARD`).
pub async fn wait_for_log(path: &Path, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout.max(HANG_GUARD);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        if Instant::now() > deadline {
            panic!("{} never said {needle:?}; it said:\n{text}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `path` says `needle` at least `n` times (a hang guard of
/// `HANG_GUARD`, not a bound on how fast).
pub async fn wait_for_count(path: &Path, needle: &str, n: usize) {
    let deadline = Instant::now() + HANG_GUARD;
    while count_in_log(path, needle) < n {
        assert!(
            Instant::now() < deadline,
            "{} never said {needle:?} {n} times; it said:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `check` holds (a hang guard of `HANG_GUARD`, not a bound on
/// how fast); `what` says what was awaited if it never does.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + HANG_GUARD;
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn count_in_log(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// The keys an auth callout deployment needs.
pub struct CalloutKeys {
    pub issuer: nkeys::KeyPair,
    pub xkey: nkeys::XKey,
}

impl CalloutKeys {
    pub fn new() -> Self {
        CalloutKeys {
            issuer: nkeys::KeyPair::new_account(),
            xkey: nkeys::XKey::new(),
        }
    }
}

/// A config for a service that only has to start: the callout issuer's
/// seed in `issuer.nk` beside `config.toml`, the issuer at `issuer_url`
/// (roles in `roles`), one role; `more` adds the rest (`[nats]`, `[http]`).
pub fn minimal_config(
    keys: &CalloutKeys,
    issuer_url: &str,
    more: impl FnOnce(ConfigToml) -> ConfigToml,
) -> (tempfile::TempDir, PathBuf) {
    let config = ConfigToml::new()
        .issuer_seed_file("issuer.nk")
        .oidc(Oidc::new(issuer_url).roles_claim("roles"))
        .role("a", "sub.allow = [\"a\"]");
    let (dir, path) = write_config(&more(config));
    std::fs::write(dir.path().join("issuer.nk"), keys.issuer.seed().unwrap()).unwrap();
    (dir, path)
}

/// `config` as `config.toml` in a directory of its own, beside a fresh
/// account seed in `issuer.nk` (mode 0600) for configs that name the file.
pub fn write_config(config: &ConfigToml) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_private(
        &dir.path().join("issuer.nk"),
        &nkeys::KeyPair::new_account().seed().unwrap(),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.to_string()).unwrap();
    (dir, path)
}

/// The accounts and auth callout blocks of a test nats-server: accounts
/// AUTH (the callout's user), APP, TEAM and SYS; with `xkey`, requests sealed
/// to that key; with a JetStream store, JetStream on for AUTH (the KV grants
/// bucket lives there), APP and TEAM, and an account DATA holding the
/// streams of the grants, with the exports and imports `layout` says
/// (`nats-oidc-callout accounts`). `auth_users` are more users of AUTH
/// (name, nats.conf user map) that skip the callout, like the service's.
pub fn callout_conf(
    issuer_public: &str,
    xkey_public: Option<&str>,
    jetstream_store: Option<&Path>,
    layout: Option<&Layout>,
    auth_users: &[(String, String)],
) -> String {
    let (jetstream, auth_js) = match jetstream_store {
        Some(store) => (
            format!("jetstream {{ store_dir: \"{}\" }}\n", store.display()),
            " jetstream: enabled,",
        ),
        None => (String::new(), ""),
    };
    let xkey_line = xkey_public
        .map(|x| format!("    xkey: {x}\n"))
        .unwrap_or_default();
    // Any nkey user in the config makes nats-server send every client a
    // nonce, which nkey identities ([users.*] nkey) must sign. Its seed is
    // thrown away: nobody logs in as it.
    let nonce_enabler = nkeys::KeyPair::new_user().public_key();
    let imports = |account: &str| layout.map(|l| l.imports_conf(account)).unwrap_or_default();
    // An account that imports DATA's JetStream API has none of its own.
    let js_of = |account: &str| match layout {
        Some(l) if l.imports.contains_key(account) => "",
        _ => auth_js,
    };
    let data = match (jetstream_store, layout) {
        (Some(_), Some(l)) if !l.imports.is_empty() => {
            format!("  DATA {{ jetstream: enabled\n{}\n  }}\n", l.exports_conf())
        }
        (Some(_), _) => "  DATA { jetstream: enabled }\n".to_string(),
        (None, _) => String::new(),
    };
    let more_users: String = auth_users
        .iter()
        .map(|(_, user)| format!(",\n    {user}"))
        .collect();
    let skip_callout: String = auth_users
        .iter()
        .map(|(name, _)| format!(", {name}"))
        .collect();
    format!(
        r#"{jetstream}accounts {{
  AUTH {{{auth_js} users: [ {{ user: auth, password: authpw }}, {{ nkey: {nonce_enabler} }}{more_users} ] }}
  APP {{{app_js}
{app_imports}
  }}
  TEAM {{{team_js}
{team_imports}
  }}
{data}  SYS {{ users: [ {{ user: sys, password: sys }} ] }}
}}
system_account: SYS
authorization {{
  timeout: 2
  auth_callout {{
    issuer: {issuer_public}
    auth_users: [ auth, sys{skip_callout} ]
    account: AUTH
{xkey_line}  }}
}}
"#,
        app_imports = imports("APP"),
        team_imports = imports("TEAM"),
        app_js = js_of("APP"),
        team_js = js_of("TEAM"),
    )
}

/// A plain-text websocket listener on loopback (browsers' transport), which
/// nats-server authorizes like any client: through the callout.
fn websocket_conf(port: Option<u16>) -> String {
    port.map(|p| format!("websocket {{ listen: \"127.0.0.1:{p}\", no_tls: true }}\n"))
        .unwrap_or_default()
}

pub struct NatsServer {
    pub port: u16,
    /// The websocket listener's port, when there is one.
    pub ws_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub log: PathBuf,
    starts: usize,
}

impl NatsServer {
    /// Starts nats-server in config mode: accounts AUTH (the callout's user),
    /// APP (where users land) and SYS, with auth callout on. With `xkey`, the
    /// server seals requests to that public key.
    pub fn start(issuer_public: &str, xkey_public: Option<&str>) -> NatsServer {
        NatsServer::start_callout(issuer_public, xkey_public, false, false, None, "", &[])
    }

    /// Like `start`, with JetStream on for the callout's account (for the KV
    /// grants bucket) and the users' accounts.
    pub fn start_jetstream(issuer_public: &str) -> NatsServer {
        NatsServer::start_callout(issuer_public, None, true, false, None, "", &[])
    }

    fn start_callout(
        issuer_public: &str,
        xkey_public: Option<&str>,
        js: bool,
        websocket: bool,
        layout: Option<&Layout>,
        extra: &str,
        auth_users: &[(String, String)],
    ) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let store = js.then(|| dir.path().join("js"));
        let ws_port = websocket.then(free_port);
        let conf = format!(
            r#"listen: 127.0.0.1:{port}
# OIDC tokens are often larger than the 4 KiB default control line.
max_control_line: 64KB
{extra}
{}{}"#,
            websocket_conf(ws_port),
            callout_conf(
                issuer_public,
                xkey_public,
                store.as_deref(),
                layout,
                auth_users
            )
        );
        let mut server = NatsServer::start_with(dir, port, conf);
        server.ws_port = ws_port;
        server
    }

    /// Starts nats-server without auth callout: one account, where the
    /// service's `auth` user and test clients may publish authorization
    /// requests of their own making straight onto the callout subject (in
    /// callout mode nats-server itself forbids that).
    pub fn start_plain() -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = format!(
            r#"listen: 127.0.0.1:{port}
max_control_line: 64KB
authorization {{ users: [ {{ user: auth, password: authpw }} ] }}
"#
        );
        NatsServer::start_with(dir, port, conf)
    }

    pub fn start_with(dir: tempfile::TempDir, port: u16, conf: String) -> NatsServer {
        NatsServer::try_start_with(dir, port, conf).unwrap_or_else(|log| panic!("{log}"))
    }

    /// Like `start_with`, but a server that exits before it is ready is an
    /// error with its log (a port taken meanwhile, say), not a panic.
    pub fn try_start_with(
        dir: tempfile::TempDir,
        port: u16,
        conf: String,
    ) -> Result<NatsServer, String> {
        std::fs::write(dir.path().join("nats.conf"), conf).unwrap();
        let log = dir.path().join("nats.log");
        let mut server = NatsServer {
            port,
            ws_port: None,
            dir,
            child: None,
            log,
            starts: 0,
        };
        server.try_spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) {
        self.try_spawn().unwrap_or_else(|log| panic!("{log}"));
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(self.dir.path().join("nats.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + HANG_GUARD;
        while count_in_log(&self.log, "Server is ready") < self.starts {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                return Err(format!(
                    "nats-server did not start: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The websocket listener's URL (a server started with one).
    pub fn ws_url(&self) -> String {
        format!(
            "ws://127.0.0.1:{}",
            self.ws_port
                .expect("this nats-server has a websocket listener")
        )
    }

    /// Where JetStream keeps its files (a server started with JetStream).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct ServiceOptions {
    pub xkey: bool,
    /// JetStream on in nats-server, for the users' accounts too.
    pub jetstream: bool,
    /// A websocket listener in nats-server (`NatsServer::ws_url`).
    pub websocket: bool,
    pub extra_oidc: String,
    pub extra_callout: String,
    pub roles: String,
    pub wait_for_keys: bool,
    /// Serve /healthz, /readyz and /metrics on this loopback port.
    pub http_port: Option<u16>,
    pub json_logs: bool,
    pub user_claim: String,
    /// File mode of the seed files the harness writes.
    pub seed_mode: u32,
    /// Replaces the whole `[oidc]` section (for `[[oidc]]` blocks); the
    /// issuer URL passed to `start` is then unused.
    pub oidc: Option<String>,
    /// Replaces the `[nats]` section's keys (`{url}` is the server's URL,
    /// `{addr}` its host and port).
    pub nats: Option<String>,
    /// RUST_LOG for the service ("info" unless set).
    pub rust_log: Option<String>,
    /// Run nats-server in operator mode (also for every stack when
    /// `NATS_OIDC_CALLOUT_TEST_MODE=operator`).
    pub operator: bool,
    /// More `[callout]` tables, after every `[callout]` key.
    pub callout_tables: String,
    /// More nats-server config lines (`feature_flags { ... }`).
    pub nats_extra: String,
    /// The development issuer serves HTTPS with this certificate.
    pub issuer_tls: Option<nats_oidc_callout::dev::CertAndKey>,
    /// The development issuer wants this token for discovery and JWKS.
    pub issuer_bearer: Option<String>,
    /// The keys of a `[revocation]` table, as written (none: no table).
    pub revocation: String,
    /// More users of the callout's account AUTH that skip the callout:
    /// (name, nats.conf user map). Config mode.
    pub auth_users: Vec<(String, String)>,
    /// The same in operator mode: public keys listed in AUTH's
    /// `auth_users` (their creds: `OperatorSetup::auth_user_creds`).
    pub operator_auth_users: Vec<String>,
    /// `[revocation]` also gets the system-account login that closes live
    /// connections: user `sys` (config mode), or a system-account user's
    /// creds file (operator mode, `system_creds_file`).
    pub system_login: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            xkey: false,
            jetstream: false,
            websocket: false,
            extra_oidc: String::new(),
            extra_callout: String::new(),
            roles: default_roles(),
            wait_for_keys: true,
            http_port: None,
            json_logs: false,
            user_claim: "preferred_username".to_string(),
            seed_mode: 0o600,
            oidc: None,
            nats: None,
            rust_log: None,
            operator: false,
            callout_tables: String::new(),
            nats_extra: String::new(),
            issuer_tls: None,
            issuer_bearer: None,
            revocation: String::new(),
            auth_users: Vec::new(),
            operator_auth_users: Vec::new(),
            system_login: false,
        }
    }
}

/// `dev`'s sample roles (admin, reader) and a writer.
pub use nats_oidc_callout_test_support::config::default_roles;

/// The seed files a service config names, beside it.
fn write_seeds(dir: &Path, keys: &CalloutKeys, opts: &ServiceOptions) {
    std::fs::write(dir.join("issuer.nk"), keys.issuer.seed().unwrap()).unwrap();
    if opts.xkey {
        std::fs::write(dir.join("xkey.nk"), keys.xkey.seed().unwrap()).unwrap();
    }
    for seed in ["issuer.nk", "xkey.nk"] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(
            dir.join(seed),
            std::fs::Permissions::from_mode(opts.seed_mode),
        );
    }
}

/// The service's config file for a stack: `opts` over the defaults.
fn service_config(nats_url: &str, issuer: &str, opts: &ServiceOptions) -> String {
    let xkey_line = if opts.xkey {
        "xkey_seed_file = \"xkey.nk\"\n"
    } else {
        ""
    };
    let nats = opts
        .nats
        .as_deref()
        .map(|n| {
            n.replace("{url}", nats_url)
                .replace("{addr}", nats_url.trim_start_matches("nats://"))
        })
        .unwrap_or_else(|| format!("url = \"{nats_url}\"\nuser = \"auth\"\npassword = \"authpw\""));
    format!(
        r#"[nats]
{nats}

[callout]
issuer_seed_file = "issuer.nk"
{xkey_line}account = "APP"
{extra_callout}
{callout_tables}

{oidc}
{http}
{revocation}
{roles}
"#,
        http = opts
            .http_port
            .map(|p| format!("[http]\nlisten = \"127.0.0.1:{p}\"\n"))
            .unwrap_or_default(),
        extra_callout = opts.extra_callout,
        callout_tables = opts.callout_tables,
        revocation = if opts.revocation.is_empty() {
            String::new()
        } else {
            format!("[revocation]\n{}\n", opts.revocation)
        },
        // `{dev_issuer}` in a whole [oidc] section is the development
        // issuer's URL (a stack that trusts another issuer beside it).
        oidc = opts
            .oidc
            .as_deref()
            .map(|o| o.replace("{dev_issuer}", issuer))
            .unwrap_or_else(|| format!(
                r#"[oidc]
issuer = "{issuer}"
audience = ["{AUDIENCE}"]
roles_claim = "realm_access.roles"
user_claim = "{user_claim}"
jwks_refetch_cooldown = "2s"
{extra_oidc}"#,
                user_claim = opts.user_claim,
                extra_oidc = opts.extra_oidc,
            )),
        roles = opts.roles,
    )
}

/// The exports and imports the config's JetStream grants need (None
/// without `[jetstream]`, or for a config the service would refuse).
fn layout_of(config: &str, keys: &CalloutKeys, opts: &ServiceOptions) -> Option<Layout> {
    let dir = tempfile::tempdir().unwrap();
    write_seeds(dir.path(), keys, opts);
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    nats_oidc_callout::config::Config::load(&path)
        .ok()?
        .layout()
}

/// The service binary running as a child process, logging to a file.
pub struct CalloutService {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The server its config names (`[nats] url`).
    nats_url: String,
    pub log: PathBuf,
    pub config: PathBuf,
    json_logs: bool,
    rust_log: String,
}

impl CalloutService {
    pub async fn start(
        nats_url: &str,
        issuer: &str,
        keys: &CalloutKeys,
        opts: ServiceOptions,
    ) -> CalloutService {
        let dir = tempfile::tempdir().unwrap();
        write_seeds(dir.path(), keys, &opts);
        let config = service_config(nats_url, issuer, &opts);
        let opts_revocation_list = opts.revocation.contains("kv_bucket");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("service.log");
        let mut svc = CalloutService {
            child: None,
            dir,
            nats_url: nats_url.to_string(),
            log,
            config: config_path,
            json_logs: opts.json_logs,
            rust_log: opts.rust_log.unwrap_or_else(|| "info".into()),
        };
        svc.spawn();
        wait_for_log(&svc.log, "connected to NATS", Duration::from_secs(20)).await;
        wait_for_log(
            &svc.log,
            "answering authorization requests",
            Duration::from_secs(20),
        )
        .await;
        if opts.wait_for_keys {
            wait_for_log(&svc.log, "issuer keys loaded", Duration::from_secs(20)).await;
            if opts_revocation_list {
                wait_for_log(&svc.log, "revocation list loaded", Duration::from_secs(20)).await;
            }
        }
        svc
    }

    /// The port its [http] listener bound (`http_port: Some(0)` lets it
    /// pick a free one, so no other test can take it in between), as its
    /// last start logged it.
    pub fn http_port(&self) -> u16 {
        self.logged_port("serving /healthz")
    }

    /// The port its back-channel logout endpoint bound, as its last start
    /// logged it (`backchannel_listen = "127.0.0.1:0"` picks a free one).
    pub fn backchannel_port(&self) -> u16 {
        self.logged_port("serving /backchannel-logout")
    }

    /// The port of the last log line containing `needle` with a `listen`
    /// field.
    fn logged_port(&self, needle: &str) -> u16 {
        let text = self.log_text();
        text.lines()
            .rev()
            .filter(|l| l.contains(needle))
            .find_map(|l| {
                // Text logs say listen=ADDR, JSON logs "listen":"ADDR".
                let at = l
                    .find("listen=")
                    .map(|i| i + "listen=".len())
                    .or_else(|| l.find("\"listen\":").map(|i| i + "\"listen\":".len()))?;
                let addr = l[at..]
                    .split([' ', '"', ',', '}'])
                    .find(|s| !s.is_empty())?;
                addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
            })
            .unwrap_or_else(|| panic!("the service logged no {needle:?} listener:\n{text}"))
    }

    /// Another replica of this service: the same config, seeds and
    /// credentials, copied into a directory of its own (so that this one
    /// may stop first), in the same queue group.
    pub async fn replica(&self) -> CalloutService {
        self.replica_on(&self.nats_url.clone()).await
    }

    /// Like `replica`, connected to the server at `nats_url` instead (a
    /// node of a cluster): the copied config names that server.
    pub async fn replica_on(&self, nats_url: &str) -> CalloutService {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() && path.extension().is_none_or(|e| e != "log") {
                let to = dir.path().join(path.file_name().unwrap());
                std::fs::copy(&path, &to).unwrap();
            }
        }
        let config = dir.path().join(self.config.file_name().unwrap());
        if nats_url != self.nats_url {
            let text = std::fs::read_to_string(&config).unwrap();
            let from = format!("\"{}\"", self.nats_url);
            assert!(text.contains(&from), "the config names {from}:\n{text}");
            std::fs::write(&config, text.replace(&from, &format!("\"{nats_url}\""))).unwrap();
        }
        let mut replica = CalloutService {
            child: None,
            nats_url: nats_url.to_string(),
            log: dir.path().join("service.log"),
            config,
            dir,
            json_logs: self.json_logs,
            rust_log: self.rust_log.clone(),
        };
        replica.spawn();
        wait_for_log(
            &replica.log,
            "answering authorization requests",
            Duration::from_secs(20),
        )
        .await;
        replica
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", &self.rust_log)
            .env(
                "NATS_OIDC_CALLOUT_LOG_FORMAT",
                if self.json_logs { "json" } else { "text" },
            )
            .env_remove("NATS_OIDC_CALLOUT_ISSUER_SEED")
            .env_remove("NATS_OIDC_CALLOUT_XKEY_SEED")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the service");
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (e.g. "HUP") to the running service.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Crashes it (SIGKILL) and starts it again from the same directory:
    /// what it kept in memory is gone. Returns once it answers requests
    /// again and, with a revocation list, has read it.
    pub async fn restart(&mut self) {
        let count = |svc: &CalloutService, needle| count_in_log(&svc.log, needle);
        let (answering, loaded) = (
            count(self, "answering authorization requests"),
            count(self, "revocation list loaded"),
        );
        self.kill();
        self.spawn();
        wait_for_count(&self.log, "answering authorization requests", answering + 1).await;
        if loaded > 0 {
            wait_for_count(&self.log, "revocation list loaded", loaded + 1).await;
        }
    }

    /// Kills the service with SIGKILL (a crash: nothing in flight is finished).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("service did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CalloutService {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A connected client plus the server errors it was told about (permission
/// violations arrive asynchronously as `-ERR` lines).
pub struct TestClient {
    pub client: async_nats::Client,
    events: Arc<Mutex<Vec<String>>>,
    event_rx: mpsc::UnboundedReceiver<String>,
}

impl TestClient {
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// Whether nats-server told this client of a permissions violation
    /// for `what` ("publish", "subscription", ...) within 2 s.
    pub async fn violation(&mut self, what: &str) -> bool {
        self.wait_event(
            &format!("permissions violation for {what}"),
            Duration::from_secs(2),
        )
        .await
    }

    /// Waits for a client event containing `needle` (case-insensitive).
    pub async fn wait_event(&mut self, needle: &str, timeout: Duration) -> bool {
        let needle = needle.to_lowercase();
        if self
            .events()
            .iter()
            .any(|e| e.to_lowercase().contains(&needle))
        {
            return true;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.event_rx.recv()).await {
                Ok(Some(e)) if e.to_lowercase().contains(&needle) => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    }
}

/// Connects the way users do: any user name, the token as the password.
/// Connects with the token as the password (and, to an operator-mode
/// server, the sentinel credentials).
pub async fn connect(url: &str, token: &str) -> Result<TestClient, async_nats::ConnectError> {
    connect_with(
        url,
        private_inbox(base_options(url).await, token)
            .user_and_password("anything".into(), token.into()),
    )
    .await
}

/// Replies come to the token's private inbox (`{{inbox}}`), as the
/// README tells clients to set it.
pub fn private_inbox(options: ConnectOptions, token: &str) -> ConnectOptions {
    match nats_oidc_client::inbox::of_token(token) {
        Ok(prefix) => options.custom_inbox_prefix(prefix),
        Err(_) => options,
    }
}

/// Connects with the token sent as the connect `auth_token`.
pub async fn connect_with_token(
    url: &str,
    token: &str,
) -> Result<TestClient, async_nats::ConnectError> {
    connect_with(
        url,
        private_inbox(base_options(url).await, token).token(token.into()),
    )
    .await
}

/// What every client of `url` starts from: the sentinel credentials when
/// the server is in operator mode, nothing otherwise.
pub async fn base_options(url: &str) -> ConnectOptions {
    match sentinel_for(url) {
        Some(creds) => ConnectOptions::with_credentials_file(creds)
            .await
            .expect("sentinel creds"),
        None => ConnectOptions::new(),
    }
}

pub async fn connect_with(
    url: &str,
    options: ConnectOptions,
) -> Result<TestClient, async_nats::ConnectError> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (tx, event_rx) = mpsc::unbounded_channel();
    let sink = events.clone();
    let client = options
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event: Event| {
            let text = event.to_string();
            sink.lock().unwrap().push(text.clone());
            let _ = tx.send(text);
            async {}
        })
        .connect(url)
        .await?;
    Ok(TestClient {
        client,
        events,
        event_rx,
    })
}

/// Asserts that `attempt` is refused and that the service logged a refusal
/// with `code` (counted, so an earlier refusal with the code does not count).
pub async fn assert_refused_as(
    stack: &Stack,
    code: &str,
    case: &str,
    attempt: impl std::future::Future<Output = Result<TestClient, async_nats::ConnectError>>,
) {
    let needle = format!("code=\"{code}\"");
    let before = count_in_log(&stack.service.log, &needle);
    match attempt.await {
        Ok(_) => panic!("{case}: the connection was allowed"),
        Err(e) => assert!(
            e.to_string().to_lowercase().contains("authorization"),
            "{case}: refused for an unexpected reason: {e}"
        ),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while count_in_log(&stack.service.log, &needle) <= before {
        assert!(
            Instant::now() < deadline,
            "{case}: no refusal with {needle} in\n{}",
            stack.service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that connecting with `token` is refused.
pub async fn assert_refused(url: &str, token: &str, case: &str) {
    match connect(url, token).await {
        Ok(_) => panic!("{case}: the connection was allowed"),
        Err(e) => {
            let text = e.to_string().to_lowercase();
            // nats-server 2.10 in operator mode may hang up without an
            // -ERR when no callout service answers at all.
            let hung_up = sentinel_for(url).is_some()
                && (text.contains("broken pipe") || text.contains("connection reset"));
            assert!(
                text.contains("authorization") || hung_up,
                "{case}: refused for an unexpected reason: {e}"
            );
        }
    }
}

/// True if a message published by `publisher` on `subject` reaches a
/// subscriber of `receiver`. Waits up to 10 s, so a loaded machine does not
/// turn a delivery into a false refusal (a delivery ends the wait at once).
pub async fn delivered(
    publisher: &async_nats::Client,
    receiver: &async_nats::Client,
    subject: &str,
) -> bool {
    probe(publisher, receiver, subject, Duration::from_secs(10)).await
}

/// True if nothing published on `subject` reaches `receiver` within 500 ms.
/// Tests pair it with a `delivered` control on an allowed subject.
pub async fn not_delivered(
    publisher: &async_nats::Client,
    receiver: &async_nats::Client,
    subject: &str,
) -> bool {
    !probe(publisher, receiver, subject, Duration::from_millis(500)).await
}

async fn probe(
    publisher: &async_nats::Client,
    receiver: &async_nats::Client,
    subject: &str,
    wait: Duration,
) -> bool {
    use futures::StreamExt;
    let mut sub = receiver.subscribe(subject.to_string()).await.unwrap();
    server_has_read(receiver).await;
    let body = format!("probe-{}", rand_suffix());
    publisher
        .publish(subject.to_string(), body.clone().into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let got = tokio::time::timeout(wait, sub.next()).await;
    matches!(got, Ok(Some(m)) if m.payload == body.as_bytes())
}

/// Returns once nats-server has processed everything `client` sent so far
/// (a SUB, say). flush() only writes to the socket, so a publish on another
/// connection could still be routed first; a request round trip on this
/// connection (answered "no responders") proves the server read what came
/// before it, since it reads each connection in order.
pub async fn server_has_read(client: &async_nats::Client) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(format!("_INBOX.probe.{}", rand_suffix()), "".into()),
    )
    .await;
}

pub fn rand_suffix() -> String {
    nkeys::KeyPair::new_user().public_key()[1..9].to_string()
}

/// A whole deployment: issuer, nats-server, service.
pub struct Stack {
    pub issuer: DevIssuer,
    pub keys: CalloutKeys,
    pub nats: NatsServer,
    pub service: CalloutService,
    /// In operator mode: the operator, accounts and their keys.
    pub operator: Option<OperatorSetup>,
}

/// Whether every stack of this run is in operator mode
/// (`NATS_OIDC_CALLOUT_TEST_MODE=operator`): the permission suites run so
/// in CI, unchanged.
pub fn operator_mode() -> bool {
    std::env::var("NATS_OIDC_CALLOUT_TEST_MODE").is_ok_and(|m| m == "operator")
}

/// The accounts an operator-mode stack has, as config mode's nats.conf.
pub const OPERATOR_ACCOUNTS: &[&str] = &["APP", "TEAM", "OTHER", "DATA"];

/// Sentinel credentials by server URL: clients of an operator-mode server
/// present them (with the token as the password) to reach the callout.
static SENTINELS: std::sync::LazyLock<Mutex<std::collections::HashMap<String, PathBuf>>> =
    std::sync::LazyLock::new(Default::default);

/// Clients of `url` present `creds` from now on (a server this harness did
/// not start, e.g. `dev --operator`'s).
pub fn register_sentinel(url: &str, creds: PathBuf) {
    SENTINELS.lock().unwrap().insert(url.to_string(), creds);
}

pub fn sentinel_for(url: &str) -> Option<PathBuf> {
    SENTINELS.lock().unwrap().get(url).cloned()
}

/// The sentinel's user JWT, for clients that build their own CONNECT.
pub fn sentinel_jwt(url: &str) -> Option<String> {
    let text = std::fs::read_to_string(sentinel_for(url)?).ok()?;
    nats_oidc_client::creds::user_jwt(&text).map(str::to_string)
}

/// Connects as the nats CLI does with a context (nats-io/jsm.go
/// `natscontext.NATSOptions`): `user` set, user and password, and `creds`
/// is ignored; else `creds`; `token` is sent whatever else is set.
pub async fn connect_as_nats_cli(
    context: &serde_json::Value,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let text = |key: &str| context[key].as_str().filter(|s| !s.is_empty());
    let mut options = if let Some(user) = text("user") {
        async_nats::ConnectOptions::with_user_and_password(
            user.into(),
            text("password").unwrap_or("").into(),
        )
    } else if let Some(creds) = text("creds") {
        async_nats::ConnectOptions::with_credentials_file(creds)
            .await
            .expect("the context's creds file")
    } else {
        async_nats::ConnectOptions::new()
    };
    if let Some(token) = text("token") {
        options = options.token(token.into());
    }
    if let Some(prefix) = text("inbox_prefix") {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(ca) = text("ca") {
        options = options.require_tls(true).add_root_certificates(ca.into());
    }
    if let (Some(cert), Some(key)) = (text("cert"), text("key")) {
        options = options.add_client_certificate(cert.into(), key.into());
    }
    options
        .connection_timeout(Duration::from_secs(5))
        .connect(text("url").unwrap())
        .await
}

/// The context the nats CLI makes of its flags (natscli `cli/util.go`):
/// `--user` without `--password` is a token; `$NAME` in a value is taken
/// from `vars`.
pub fn nats_cli_context(command: &str, vars: &[(&str, &str)]) -> serde_json::Value {
    let words: Vec<String> = command
        .split_whitespace()
        .map(|w| {
            let mut w = w.trim_matches('"').trim_matches('\'').to_string();
            for (name, value) in vars {
                w = w.replace(&format!("${name}"), value);
            }
            w
        })
        .collect();
    let flag = |name: &str| {
        words
            .iter()
            .position(|w| w == name)
            .and_then(|i| words.get(i + 1))
            .cloned()
    };
    let mut context = serde_json::json!({});
    for (flag_name, key) in [
        ("--server", "url"),
        ("--creds", "creds"),
        ("--token", "token"),
        ("--inbox-prefix", "inbox_prefix"),
        ("--tlsca", "ca"),
        ("--tlscert", "cert"),
        ("--tlskey", "key"),
    ] {
        if let Some(v) = flag(flag_name) {
            context[key] = v.into();
        }
    }
    match (flag("--user"), flag("--password")) {
        (Some(user), None) => context["token"] = user.into(),
        (user, password) => {
            if let Some(u) = user {
                context["user"] = u.into();
            }
            if let Some(p) = password {
                context["password"] = p.into();
            }
        }
    }
    context
}

/// Writes a secret the way an operator would: readable by its owner only.
/// Writes a file only its owner may read (a seed, a key).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Server mode: the config names the callout's own account (AUTH in the
/// test nats.conf), as configs with JetStream grants must.
fn name_the_callout_account(opts: &mut ServiceOptions) {
    if !opts.extra_callout.contains("auth_account") {
        opts.extra_callout.push_str("\nauth_account = \"AUTH\"\n");
    }
}

/// The development issuer a stack's options describe.
async fn dev_issuer(opts: &ServiceOptions) -> DevIssuer {
    let issuer = match &opts.issuer_tls {
        Some(cert) => DevIssuer::start_tls(0, cert).await.unwrap(),
        None => DevIssuer::start(0).await.unwrap(),
    };
    issuer.require_bearer(opts.issuer_bearer.as_deref());
    issuer
}

/// Server mode's pieces of a stack: the callout's keys, `opts` naming the
/// callout's account and the system-account login it asks for, and the
/// exports and imports the config's JetStream grants need in nats-server.
fn server_mode(opts: &mut ServiceOptions, issuer: &str) -> (CalloutKeys, Option<Layout>) {
    let keys = CalloutKeys::new();
    name_the_callout_account(opts);
    add_system_login(opts, None);
    let layout = opts
        .jetstream
        .then(|| {
            let config = service_config("nats://127.0.0.1:4222", issuer, opts);
            layout_of(&config, &keys, opts)
        })
        .flatten();
    (keys, layout)
}

/// `[revocation]`'s system-account login, when `opts.system_login` asks
/// for one: the creds file of a system-account user in operator mode,
/// user `sys` in server mode.
fn add_system_login(opts: &mut ServiceOptions, system_creds: Option<&Path>) {
    if !opts.system_login {
        return;
    }
    let login = match system_creds {
        Some(creds) => format!("system_creds_file = \"{}\"", creds.display()),
        None => "system_user = \"sys\"\nsystem_password = \"sys\"".to_string(),
    };
    opts.revocation = format!("{}\n{login}\n", opts.revocation);
}

/// Operator mode's pieces of a stack, what every server of it trusts and
/// every service replica uses.
pub struct Operator {
    pub setup: OperatorSetup,
    /// The callout's keys: AUTH's signing key, the xkey of its JWT.
    pub keys: CalloutKeys,
    /// The creds clients present beside their tokens.
    pub sentinel: PathBuf,
}

/// Makes an operator setup (JetStream in its account JWTs when
/// `opts.jetstream`) and writes into `creds_dir` the service's, the
/// sentinel's and (with `opts.system_login`) a system user's creds
/// (`system.creds`) and the target accounts' signing keys; `opts` gets the
/// `[nats]` login, the `[callout]` tables and the system-account login.
fn operator_mode_pieces(opts: &mut ServiceOptions, issuer: &str, creds_dir: &Path) -> Operator {
    let mut setup = OperatorSetup::new(OPERATOR_ACCOUNTS, opts.xkey);
    setup.jetstream = opts.jetstream;
    setup.more_auth_users = opts.operator_auth_users.clone();
    let keys = CalloutKeys {
        issuer: nkeys::KeyPair::from_seed(&setup.auth.signing.seed().unwrap()).unwrap(),
        xkey: match &setup.xkey {
            Some(x) => nkeys::XKey::from_seed(&x.seed().unwrap()).unwrap(),
            None => nkeys::XKey::new(),
        },
    };
    let service_creds = creds_dir.join("service.creds");
    write_private(&service_creds, &setup.service_creds());
    let sentinel = creds_dir.join("sentinel.creds");
    write_private(&sentinel, &setup.sentinel_creds());
    if opts.system_login {
        let system_creds = creds_dir.join("system.creds");
        write_private(&system_creds, &setup.system_creds());
        add_system_login(opts, Some(&system_creds));
    }
    if opts.nats.is_none() {
        opts.nats = Some(format!(
            "url = \"{{url}}\"\ncreds_file = \"{}\"",
            service_creds.display()
        ));
    }
    let mut tables = format!(
        "mode = \"operator\"\nauth_account = \"{}\"\n",
        setup.auth.public_key()
    );
    for account in &setup.targets {
        let seed_file = creds_dir.join(format!("{}-sk.nk", account.name));
        write_private(&seed_file, &account.signing.seed().unwrap());
        tables.push_str(&format!(
            "\n[callout.accounts.{}]\npublic_key = \"{}\"\nsigning_key_seed_file = \"{}\"\n",
            account.name,
            account.public_key(),
            seed_file.display()
        ));
    }
    opts.callout_tables = format!("{tables}{}", opts.callout_tables);
    // The account JWTs carry the exports and imports the grants need.
    if opts.jetstream {
        let config = service_config("nats://127.0.0.1:4222", issuer, opts);
        setup.layout = layout_of(&config, &keys, opts);
    }
    Operator {
        setup,
        keys,
        sentinel,
    }
}

impl Stack {
    pub async fn start(mut opts: ServiceOptions) -> Stack {
        if opts.operator || operator_mode() {
            return Stack::start_operator(opts).await;
        }
        let issuer = dev_issuer(&opts).await;
        let (keys, layout) = server_mode(&mut opts, &issuer.issuer());
        let xkey_public = keys.xkey.public_key();
        let nats = NatsServer::start_callout(
            &keys.issuer.public_key(),
            opts.xkey.then_some(xkey_public.as_str()),
            opts.jetstream,
            opts.websocket,
            layout.as_ref(),
            &opts.nats_extra,
            &opts.auth_users,
        );
        let service = CalloutService::start(&nats.url(), &issuer.issuer(), &keys, opts).await;
        Stack {
            issuer,
            keys,
            nats,
            service,
            operator: None,
        }
    }

    /// nats-server in operator mode: an operator, SYS, AUTH (the callout
    /// switched on in its JWT, signing key for the service), APP, TEAM
    /// and OTHER with signing keys, all in a memory resolver; the service
    /// logs in with its own user's creds and clients with the sentinel.
    pub async fn start_operator(mut opts: ServiceOptions) -> Stack {
        let issuer = dev_issuer(&opts).await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let Operator {
            setup,
            keys,
            sentinel,
        } = operator_mode_pieces(&mut opts, &issuer.issuer(), dir.path());
        let jetstream = if opts.jetstream {
            format!(
                "jetstream {{ store_dir: \"{}\" }}\n",
                dir.path().join("js").display()
            )
        } else {
            String::new()
        };
        let ws_port = opts.websocket.then(free_port);
        let conf = format!(
            "listen: 127.0.0.1:{port}\nmax_control_line: 64KB\n{}\n{jetstream}{}{}",
            opts.nats_extra,
            websocket_conf(ws_port),
            setup.nats_conf()
        );
        let mut nats = NatsServer::start_with(dir, port, conf);
        nats.ws_port = ws_port;
        if nats.ws_port.is_some() {
            register_sentinel(&nats.ws_url(), sentinel.clone());
        }
        SENTINELS.lock().unwrap().insert(nats.url(), sentinel);
        let service = CalloutService::start(&nats.url(), &issuer.issuer(), &keys, opts).await;
        Stack {
            issuer,
            keys,
            nats,
            service,
            operator: Some(setup),
        }
    }

    /// Like `start`, on a plain nats-server (see `NatsServer::start_plain`):
    /// for tests that play the part of nats-server themselves.
    pub async fn start_direct(mut opts: ServiceOptions) -> Stack {
        name_the_callout_account(&mut opts);
        let issuer = dev_issuer(&opts).await;
        let keys = CalloutKeys::new();
        let nats = NatsServer::start_plain();
        let service = CalloutService::start(&nats.url(), &issuer.issuer(), &keys, opts).await;
        Stack {
            issuer,
            keys,
            nats,
            service,
            operator: None,
        }
    }

    pub fn token(&self, user: &str, roles: &[&str]) -> String {
        self.issuer.token(user, AUDIENCE, roles, 300)
    }

    /// A client of `user` with `roles` (a token as its password), which
    /// must be admitted.
    pub async fn client(&self, user: &str, roles: &[&str]) -> TestClient {
        connect(&self.url(), &self.token(user, roles))
            .await
            .unwrap_or_else(|e| panic!("{user} with {roles:?} connects: {e}"))
    }

    pub fn url(&self) -> String {
        self.nats.url()
    }
}

impl Drop for Stack {
    /// A failing test shows what the service and nats-server said.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- service log ----\n{}", self.service.log_text());
            eprintln!("---- nats-server log ----\n{}", self.nats.log_text());
        }
    }
}

/// Reads lines of a log file (for assertions on reasons).
pub fn log_lines(path: &Path) -> Vec<String> {
    match File::open(path) {
        Ok(f) => BufReader::new(f).lines().map_while(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

/// GET on the service's operations endpoint: (status, body).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("http endpoint answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The service binary, for its subcommands.
pub fn callout_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
}

/// What a subcommand printed, stdout then stderr.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `explain` with the token on stdin, as an operator runs it.
pub fn explain_stdin(config: &Path, token: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = callout_bin()
        .args(["explain", "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A client of the callout's own account (the `auth` user, which skips the
/// callout): what an operator uses for `nats micro`, the KV grants bucket,
/// or to try publishing on the callout subject.
pub async fn callout_user(url: &str) -> async_nats::Client {
    ConnectOptions::with_user_and_password("auth".into(), "authpw".into())
        .connect(url)
        .await
        .expect("the callout user connects")
}

/// Waits for load tasks and gathers what each recorded.
pub async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<Vec<T>>>) -> Vec<T> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// One connect attempt the way a client makes it, with nothing but a
/// socket: INFO, CONNECT, PING, and whatever the server answers. For floods
/// of thousands, where a full client per attempt would cost too much.
pub async fn raw_connect(addr: &str, user: &str, pass: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut socket) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let mut buf = [0u8; 2048];
    let wait = Duration::from_secs(5);
    let _ = tokio::time::timeout(wait, socket.read(&mut buf)).await;
    // To an operator-mode server, with the sentinel (a bearer JWT).
    let jwt = sentinel_jwt(&format!("nats://{addr}"))
        .map(|j| format!("\"jwt\":\"{j}\","))
        .unwrap_or_default();
    let connect = format!(
        "CONNECT {{{jwt}\"user\":\"{user}\",\"pass\":\"{pass}\",\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nPING\r\n"
    );
    let _ = socket.write_all(connect.as_bytes()).await;
    let _ = tokio::time::timeout(wait, socket.read(&mut buf)).await;
}

/// How many sockets this process may open, to size the flood.
pub fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

impl Stack {
    /// A client of the callout's own account, which skips the callout: the
    /// `auth` user, or in operator mode the service's own credentials.
    pub async fn callout_account_client(&self) -> async_nats::Client {
        match &self.operator {
            None => callout_user(&self.url()).await,
            Some(_) => ConnectOptions::with_credentials_file(self.nats.dir().join("service.creds"))
                .await
                .expect("service creds")
                .connect(self.url())
                .await
                .expect("the service's user connects"),
        }
    }

    /// A client of the system account (monitoring requests): user `sys`,
    /// or in operator mode a user of the operator's system account.
    pub async fn system_client(&self) -> async_nats::Client {
        match self.system_creds() {
            None => ConnectOptions::with_user_and_password("sys".into(), "sys".into())
                .connect(self.url())
                .await
                .expect("the system user connects"),
            Some(creds) => ConnectOptions::with_credentials_file(creds)
                .await
                .expect("system creds")
                .connect(self.url())
                .await
                .expect("the system user connects"),
        }
    }

    /// In operator mode, a `.creds` file of a system-account user (server
    /// mode has the user `sys`, password `sys`).
    pub fn system_creds(&self) -> Option<PathBuf> {
        let setup = self.operator.as_ref()?;
        let creds = self.nats.dir().join("system.creds");
        if !creds.exists() {
            write_private(&creds, &setup.system_creds());
        }
        Some(creds)
    }

    /// How nats-server names the account `name`: the name itself, or in
    /// operator mode its public key.
    pub fn account_id(&self, name: &str) -> String {
        match &self.operator {
            None => name.to_string(),
            Some(setup) => setup
                .target(name)
                .unwrap_or_else(|| panic!("no account {name}"))
                .public_key(),
        }
    }

    /// Starts watching the callout's answers on the wire (unsealed ones:
    /// a stack without xkey): every user JWT nats-server is sent, decoded.
    pub async fn watch_user_jwts(&self) -> UserJwts {
        use futures::StreamExt;
        let client = self.callout_account_client().await;
        let mut all = client.subscribe(">").await.unwrap();
        server_has_read(&client).await;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _client = client;
            while let Some(m) = all.next().await {
                let Some(claims) = jwt_claims(&String::from_utf8_lossy(&m.payload)) else {
                    continue;
                };
                if claims["nats"]["type"] != "authorization_response" {
                    continue;
                }
                if let Some(user_jwt) = claims["nats"]["jwt"].as_str() {
                    if let Some(user) = jwt_claims(user_jwt) {
                        let _ = tx.send(user);
                    }
                }
            }
        });
        UserJwts(rx)
    }
}

/// The user JWTs the callout answers with, as they cross the wire.
pub struct UserJwts(mpsc::UnboundedReceiver<serde_json::Value>);

impl UserJwts {
    /// The claims of the next user JWT for the user named `name`.
    pub async fn next_for(&mut self, name: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.0.recv()).await {
                Ok(Some(c)) if c["name"] == name => return c,
                Ok(Some(_)) => continue,
                _ => panic!("no user JWT for {name} crossed the wire"),
            }
        }
    }
}

/// The claims of a JWT, if `text` is one.
pub fn jwt_claims(text: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = text.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
