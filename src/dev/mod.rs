//! `nats-oidc-callout dev`: everything on one machine for a first try, in the
//! spirit of `vault server -dev`. Throwaway keys, the development issuer,
//! a nats-server with a generated callout config, and the service itself,
//! then tokens per role and the `nats` commands to try them. Revocation is
//! on (a revocation list in JetStream, live connections closed through a
//! system-account login, the back-channel logout endpoint the issuer sends
//! logouts to), with a logout and a `revoke` to try.
//!
//! Nothing here can be reached from a config file: it is a separate command
//! that writes its own config into a temporary directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) mod issuer;
pub(crate) mod nats_server;
pub(crate) mod operator;
pub(crate) mod pki;

pub use issuer::DevIssuer;
pub use nats_server::locate_or_install;
pub use operator::OperatorSetup;
pub use pki::{CertAndKey, Pki};

use crate::config::Config;
use crate::secrets;
use crate::service::Service;

pub struct DevOptions {
    pub nats_port: u16,
    pub issuer_port: u16,
    /// Where a nats-server is installed when none is found.
    pub tools_dir: PathBuf,
    /// Run nats-server in operator mode (accounts as JWTs) instead.
    pub operator: bool,
    /// TLS everywhere: a private CA, nats-server asking every client for a
    /// certificate, the issuer over HTTPS.
    pub tls: bool,
}

/// A path as a TOML string.
fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// A path as a string of nats-server's config (JSON's quoting).
fn conf_string(path: &Path) -> String {
    serde_json::Value::String(path.display().to_string()).to_string()
}

/// `dev --tls`: the files a private CA made for the stack.
struct DevTls {
    ca: PathBuf,
    nats_server: CertAndKey,
    issuer: CertAndKey,
    service: CertAndKey,
    /// For the printed commands' users.
    user: CertAndKey,
}

impl DevTls {
    /// `options` over TLS to the development nats-server, trusting its CA
    /// and presenting `client`'s certificate.
    fn connect_as(
        &self,
        options: async_nats::ConnectOptions,
        client: &CertAndKey,
    ) -> async_nats::ConnectOptions {
        options
            .require_tls(true)
            .add_root_certificates(self.ca.clone())
            .add_client_certificate(client.0.clone(), client.1.clone())
    }

    fn new(dir: &Path) -> Result<DevTls, String> {
        let pki = Pki::new(dir, "nats-oidc-callout dev (throwaway)")?;
        let hosts = ["127.0.0.1", "localhost"];
        Ok(DevTls {
            ca: pki.ca_file(),
            nats_server: pki.server("nats-server", &hosts)?,
            issuer: pki.server("issuer", &hosts)?,
            service: pki.client("service", (-1, 30))?,
            user: pki.client("user", (-1, 30))?,
        })
    }

    /// nats-server's `tls {}` for client connections: every client shows a
    /// certificate of the CA.
    fn nats_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n  timeout: 5\n}}\n",
            conf_string(&self.nats_server.0),
            conf_string(&self.nats_server.1),
            conf_string(&self.ca)
        )
    }

    /// The service's `[nats.tls]` table.
    fn service_table(&self) -> String {
        format!(
            "\n[nats.tls]\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
            toml_string(&self.ca),
            toml_string(&self.service.0),
            toml_string(&self.service.1)
        )
    }

    /// The nats CLI's flags for the user certificate.
    fn cli_flags(&self) -> String {
        format!(
            "--tlsca {} --tlscert {} --tlskey {} ",
            self.ca.display(),
            self.user.0.display(),
            self.user.1.display()
        )
    }
}

/// The roles `dev` starts with; tests and the fuzzers use them too.
pub const SAMPLE_ROLES: &str = r#"
[roles.admin]
pub.allow = [">"]
sub.allow = [">"]

[roles.reader]
sub.allow = ["orders.>", "{{inbox}}.>"]
sub.deny  = ["orders.secret.>"]
resp = { max = 1 }

"#;

pub async fn run(
    opts: DevOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let mut shutdown = std::pin::pin!(shutdown);
    eprintln!("{}", banner(opts.tls));
    // A port something else holds would have nats-server die on the bind
    // while this command went on talking to whatever listens there.
    port_is_free(opts.nats_port, "--nats-port")?;
    let dir = tempfile::Builder::new()
        .prefix("nats-oidc-callout-dev-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    // Ctrl-C while the stack starts drops what started so far (the
    // nats-server is killed) and the directory with its throwaway seeds.
    let started = tokio::select! {
        started = start(&opts, dir.path()) => started?,
        () = &mut shutdown => return Ok(()),
    };
    let Started {
        issuer,
        nats_url,
        layout,
        tls,
        mut nats,
        nats_log,
        running,
        stop,
        admin,
        admin_sid,
        reader,
        http_port,
    } = started;
    println!(
        "{}",
        instructions(&Printed {
            nats_url: &nats_url,
            issuer: &issuer,
            admin: &admin,
            admin_sid: &admin_sid,
            reader: &reader,
            dir: dir.path(),
            layout: &layout,
            tls: tls.as_ref(),
            http_port,
        })
    );
    tokio::select! {
        _ = shutdown => {}
        r = running => return r.map_err(|e| e.to_string())?.map_err(|e| e.to_string()),
        // Without it the service would go on reconnecting to whatever
        // takes the port next.
        status = nats.0.wait() => return Err(nats_stopped(status, &nats_log)),
    }
    let _ = stop.send(());
    Ok(())
}

/// A started stack: what runs, and what `instructions` prints.
struct Started {
    issuer: DevIssuer,
    nats_url: String,
    layout: Layout,
    tls: Option<DevTls>,
    nats: NatsChild,
    nats_log: PathBuf,
    running: tokio::task::JoinHandle<Result<(), crate::service::ServiceError>>,
    /// Stops the service.
    stop: tokio::sync::oneshot::Sender<()>,
    admin: String,
    /// The login session of `admin`.
    admin_sid: String,
    reader: String,
    /// The service's /metrics and /readyz.
    http_port: u16,
}

/// Starts the issuer, nats-server and the service with their files in
/// `dir`, and sees a token admitted.
async fn start(opts: &DevOptions, dir: &Path) -> Result<Started, String> {
    let tls = opts.tls.then(|| DevTls::new(dir)).transpose()?;
    let started = match &tls {
        Some(tls) => DevIssuer::start_tls(opts.issuer_port, &tls.issuer).await,
        None => DevIssuer::start(opts.issuer_port).await,
    };
    let issuer = started.map_err(|e| {
        format!(
            "cannot start the development issuer on 127.0.0.1:{}: {e}; stop what listens there or pass --issuer-port 0 (any free port)",
            opts.issuer_port
        )
    })?;
    let scheme = if tls.is_some() { "tls" } else { "nats" };
    let nats_url = format!("{scheme}://127.0.0.1:{}", opts.nats_port);
    // The service binds it; the issuer sends its logouts there.
    let backchannel_port = free_port()?;
    let http_port = free_port()?;
    issuer.register_backchannel_logout(
        &format!("http://127.0.0.1:{backchannel_port}/backchannel-logout"),
        issuer::CLIENT_ID,
    );
    let stack = Stack {
        dir,
        port: opts.nats_port,
        nats_url: &nats_url,
        issuer: &issuer.issuer(),
        tls: tls.as_ref(),
        backchannel_port,
        http_port,
    };
    let layout = if opts.operator {
        Layout::operator(&stack)?
    } else {
        Layout::server(&stack)?
    };

    let tools = opts.tools_dir.clone();
    let bin = tokio::task::spawn_blocking(move || nats_server::locate_or_install(&tools))
        .await
        .map_err(|e| e.to_string())??;
    let nats_log = dir.join("nats.log");
    let mut nats = start_nats(
        &bin,
        &layout.nats_conf,
        &nats_log,
        opts.nats_port,
        &layout.server_name,
    )
    .await?;

    let config = Config::load(&layout.config).map_err(|e| e.to_string())?;
    let service = Service::new(config).map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut running = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));

    // Each a login session of its own, which a logout can name.
    let admin_sid = nuid::next().to_string();
    let admin = issuer.token_with_sid("ana", "nats", &["admin"], 3600, &admin_sid);
    let reader = issuer.token_with_sid("rita", "nats", &["reader"], 3600, &nuid::next());
    let ready = async {
        wait_until_ready(http_port).await?;
        wait_until_answering(&nats_url, &layout.service_login, tls.as_ref()).await?;
        wait_until_admitted(&nats_url, &admin, layout.sentinel.as_deref(), tls.as_ref()).await
    };
    tokio::select! {
        ready = ready => ready?,
        // A service that cannot start says why, instead of a test token
        // that is never admitted.
        r = &mut running => {
            return Err(match r {
                Ok(Err(e)) => format!("the service stopped: {e}"),
                Ok(Ok(())) => "the service stopped".to_string(),
                Err(e) => format!("the service stopped: {e}"),
            })
        }
        status = nats.0.wait() => return Err(nats_stopped(status, &nats_log)),
    }
    Ok(Started {
        issuer,
        nats_url,
        layout,
        tls,
        nats,
        nats_log,
        running,
        stop,
        admin,
        admin_sid,
        reader,
        http_port,
    })
}

/// The error of a development nats-server that stopped, with its log.
fn nats_stopped(status: std::io::Result<std::process::ExitStatus>, log: &Path) -> String {
    let said = std::fs::read_to_string(log).unwrap_or_default();
    format!(
        "the development nats-server stopped ({}); its log:\n{said}",
        status
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string())
    )
}

/// Where a development stack runs, and how it is reached.
struct Stack<'a> {
    dir: &'a Path,
    port: u16,
    nats_url: &'a str,
    issuer: &'a str,
    tls: Option<&'a DevTls>,
    /// The service's back-channel logout listener (on 127.0.0.1).
    backchannel_port: u16,
    /// The service's `[http]` listener (on 127.0.0.1): /readyz, /metrics.
    http_port: u16,
}

/// The KV bucket of the revocation list.
const REVOCATION_BUCKET: &str = "revocations";

impl Stack<'_> {
    /// nats-server's config: `body` (accounts and the callout), its name,
    /// and TLS when asked for.
    fn nats_conf(&self, server_name: &str, body: &str) -> String {
        let tls = self.tls.map(DevTls::nats_block).unwrap_or_default();
        format!("server_name: {server_name}\n{body}{tls}")
    }

    /// nats-server's JetStream, for the revocation list's bucket.
    fn jetstream_block(&self) -> String {
        format!(
            "jetstream {{ store_dir: {} }}\n",
            conf_string(&self.dir.join("jetstream"))
        )
    }

    /// The service's config: `nats` the `[nats]` login, `callout` more
    /// `[callout]` keys and tables, `system` the `[revocation]`
    /// system-account login.
    fn service_config(&self, nats: &str, callout: &str, system: &str) -> String {
        let nats_tls = self.tls.map(DevTls::service_table).unwrap_or_default();
        let oidc_ca = self
            .tls
            .map(|t| format!("ca_file = {}\n", toml_string(&t.ca)))
            .unwrap_or_default();
        format!(
            r#"[nats]
url = "{nats_url}"
{nats}
{nats_tls}
[callout]
issuer_seed_file = "issuer.nk"
xkey_seed_file = "xkey.nk"
account = "APP"
{callout}

[revocation]
kv_bucket = "{REVOCATION_BUCKET}"
backchannel_listen = "127.0.0.1:{backchannel_port}"
{system}

[http]
listen = "127.0.0.1:{http_port}"

[[oidc]]
name = "default"
issuer = "{issuer}"
audience = ["nats"]
role_namespace = ""   # every block here maps to the plain [roles.*] tables
# The development issuer addresses its back-channel logouts to its client.
logout_audience = ["{client_id}"]
roles_claim = "realm_access.roles"
user_claim = "preferred_username"
{oidc_ca}
# Workload identities: the development issuer's presets (POST /token) sign
# as issuers of their own; tokens of these get roles only from [[bindings]].
[[oidc]]
name = "github"
issuer = "{issuer}/github"
platform = "github"
audience = ["nats"]
role_namespace = ""
require_claims = {{ repository_owner_id = 65 }}   # GitHub's issuer is shared by every repository
{oidc_ca}
[[oidc]]
name = "kubernetes"
issuer = "{issuer}/kubernetes"
platform = "kubernetes"
audience = ["nats"]
role_namespace = ""
{oidc_ca}
[[oidc]]
name = "google"
issuer = "{issuer}/google"
platform = "google"
audience = ["nats"]
role_namespace = ""
user_claim = "email"
{oidc_ca}
[[bindings]]
name = "orders-deploy"
issuer = "github"
match = {{ repository_id = 74, ref = "refs/heads/main" }}
roles = ["reader"]

[[bindings]]
name = "orders-reader"
issuer = "kubernetes"
match = {{ sub = "system:serviceaccount:orders:orders-reader" }}
roles = ["reader"]

[[bindings]]
name = "orders-exporter"
issuer = "google"
match = {{ sub = "104200000000000000001" }}
roles = ["reader"]
{SAMPLE_ROLES}"#,
            nats_url = self.nats_url,
            issuer = self.issuer,
            backchannel_port = self.backchannel_port,
            http_port = self.http_port,
            client_id = issuer::CLIENT_ID,
        )
    }
}

/// The files a development stack runs from.
struct Layout {
    nats_conf: PathBuf,
    /// The `server_name` in nats.conf: how `dev` knows the server on its
    /// port is the one it started.
    server_name: String,
    config: PathBuf,
    /// Operator mode: the sentinel credentials clients present.
    sentinel: Option<PathBuf>,
    /// How the service logs in to nats-server.
    service_login: ServiceLogin,
}

/// The service's own NATS login in a development stack.
enum ServiceLogin {
    Password {
        user: &'static str,
        password: &'static str,
    },
    Creds(PathBuf),
}

impl Layout {
    /// Accounts in nats-server's config, as infrastructure/ runs it.
    fn server(stack: &Stack<'_>) -> Result<Layout, String> {
        let dir = stack.dir;
        let account = nkeys::KeyPair::new_account();
        let xkey = nkeys::XKey::new();
        write_secret(&dir.join("issuer.nk"), &seed_of(&account))?;
        write_secret(
            &dir.join("xkey.nk"),
            &xkey.seed().map_err(|e| e.to_string())?,
        )?;
        let nats_conf = dir.join("nats.conf");
        let server_name = server_name();
        write(
            &nats_conf,
            &stack.nats_conf(
                &server_name,
                &format!(
                    "{}{}",
                    stack.jetstream_block(),
                    nats_config(stack.port, &account.public_key(), &xkey.public_key())
                ),
            ),
        )?;
        let config = dir.join("config.toml");
        let (user, password) = ("auth", "authpw");
        let nats = format!("user = \"{user}\"\npassword = \"{password}\"");
        let system = "system_user = \"sys\"\nsystem_password = \"syspw\"";
        write(&config, &stack.service_config(&nats, "", system))?;
        Ok(Layout {
            nats_conf,
            server_name,
            config,
            sentinel: None,
            service_login: ServiceLogin::Password { user, password },
        })
    }

    /// Operator mode: an operator, accounts as JWTs in a memory resolver,
    /// the callout switched on in AUTH's account JWT, a sentinel.
    fn operator(stack: &Stack<'_>) -> Result<Layout, String> {
        let (dir, port) = (stack.dir, stack.port);
        let mut setup = operator::OperatorSetup::new(&["APP"], true);
        // AUTH's JetStream holds the revocation list.
        setup.jetstream = true;
        let app = setup.target("APP").expect("made above");
        write_secret(&dir.join("auth-sk.nk"), &seed_of(&setup.auth.signing))?;
        write_secret(&dir.join("app-sk.nk"), &seed_of(&app.signing))?;
        let xkey = setup.xkey.as_ref().expect("made with an xkey");
        write_secret(
            &dir.join("xkey.nk"),
            &xkey.seed().map_err(|e| e.to_string())?,
        )?;
        let service_creds = dir.join("service.creds");
        write_secret(&service_creds, &setup.service_creds())?;
        write_secret(&dir.join("system.creds"), &setup.system_creds())?;
        let sentinel = dir.join("sentinel.creds");
        write_secret(&sentinel, &setup.sentinel_creds())?;
        let nats_conf = dir.join("nats.conf");
        let server_name = server_name();
        write(
            &nats_conf,
            &stack.nats_conf(
                &server_name,
                &format!(
                    "listen: 127.0.0.1:{port}\n# OIDC tokens with many roles or groups exceed the 4 KiB default.\nmax_control_line: 64KB\n{}{}",
                    stack.jetstream_block(),
                    setup.nats_conf()
                ),
            ),
        )?;
        let callout = format!(
            "mode = \"operator\"\nauth_account = \"{}\"\n\n[callout.accounts.APP]\npublic_key = \"{}\"\nsigning_key_seed_file = \"app-sk.nk\"\n",
            setup.auth.public_key(),
            app.public_key()
        );
        let config = dir.join("config.toml");
        write(
            &config,
            &stack
                .service_config(
                    "creds_file = \"service.creds\"",
                    &callout,
                    "system_creds_file = \"system.creds\"",
                )
                .replace(
                    "issuer_seed_file = \"issuer.nk\"",
                    "issuer_seed_file = \"auth-sk.nk\"",
                ),
        )?;
        Ok(Layout {
            nats_conf,
            server_name,
            config,
            sentinel: Some(sentinel),
            service_login: ServiceLogin::Creds(service_creds),
        })
    }
}

/// A name no other server has: `nats-oidc-callout-dev-<random>`.
fn server_name() -> String {
    format!("nats-oidc-callout-dev-{}", nuid::next())
}

/// A port free on 127.0.0.1 now (the OS picks it).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

/// Fails when something listens on `127.0.0.1:port` already.
fn port_is_free(port: u16, option: &str) -> Result<(), String> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "127.0.0.1:{port} is not free ({e}): another nats-server or program listens there; \
             stop it or pass {option} <a free port>"
        )),
    }
}

fn seed_of(key: &nkeys::KeyPair) -> String {
    key.seed().expect("a fresh key has a seed")
}

fn banner(tls: bool) -> String {
    let transport = if tls {
        "TLS from a throwaway CA"
    } else {
        "plain HTTP"
    };
    format!(
        "==================================================================\n\
         DEVELOPMENT MODE: throwaway keys, a development OIDC issuer that\n\
         signs any token it is asked for, {transport}. Never use in production.\n\
         =================================================================="
    )
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    secrets::create_private(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The same shape as infrastructure's nats.conf: accounts AUTH (the callout's
/// own user; JetStream for the revocation list), APP (where users land),
/// SYS (its user closes revoked connections). Both users bypass the callout.
fn nats_config(port: u16, issuer: &str, xkey: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:{port}
# OIDC tokens with many roles or groups exceed the 4 KiB default.
max_control_line: 64KB
accounts {{
  AUTH {{ jetstream: enabled, users: [ {{ user: auth, password: authpw }} ] }}
  APP {{}}
  SYS {{ users: [ {{ user: sys, password: syspw }} ] }}
}}
system_account: SYS
authorization {{
  auth_callout {{
    issuer: {issuer}
    auth_users: [ auth, sys ]
    account: AUTH
    xkey: {xkey}
  }}
}}
"#
    )
}

/// A nats-server child process, killed when dropped.
struct NatsChild(tokio::process::Child);

async fn start_nats(
    bin: &Path,
    conf: &Path,
    log: &Path,
    port: u16,
    name: &str,
) -> Result<NatsChild, String> {
    let log_file =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut command = tokio::process::Command::new(bin);
    command
        .arg("-c")
        .arg(conf)
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .kill_on_drop(true);
    // Out of the terminal's process group: Ctrl-C reaches dev alone, which
    // stops the service and then nats-server (killed on drop), instead of
    // nats-server quitting first and dev reporting that it stopped.
    #[cfg(unix)]
    command.process_group(0);
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut child = NatsChild(child);
    let mut last = String::from("nothing listens");
    for _ in 0..200 {
        if let Ok(Some(status)) = child.0.try_wait() {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "nats-server exited ({status}); is 127.0.0.1:{port} free?\n{said}"
            ));
        }
        // Whatever answers must be the server started here: its INFO
        // names it.
        match server_name_at(port).await {
            Ok(Some(answered)) if answered == name => return Ok(child),
            Ok(answered) => {
                last =
                    format!(
                    "a server named {:?} answers there, not the nats-server dev started ({name})",
                    answered.as_deref().map(crate::text::name).unwrap_or_default()
                );
                // Ours may still be starting, or dying on the bind.
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the nats-server dev started did not answer on 127.0.0.1:{port} within 10s: {last}"
    ))
}

/// The `server_name` in the INFO line of whatever listens on
/// `127.0.0.1:port` (None: it is not a NATS server, or names none).
async fn server_name_at(port: u16) -> Result<Option<String>, String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut line = String::new();
    // INFO lines are a few hundred bytes; a program that is not NATS may
    // send anything.
    let mut reader = tokio::io::BufReader::new(stream.take(64 * 1024));
    tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line))
        .await
        .map_err(|_| "no INFO line within 2s".to_string())?
        .map_err(|e| format!("reading INFO: {e}"))?;
    let Some(info) = line.trim_end().strip_prefix("INFO ") else {
        return Ok(None);
    };
    let info: serde_json::Value =
        serde_json::from_str(info).map_err(|e| format!("INFO is not JSON: {e}"))?;
    Ok(info["server_name"].as_str().map(str::to_string))
}

/// Waits until the service's /readyz says it is ready: connected to NATS,
/// the issuer's keys and the revocation list loaded (before that it
/// refuses every token, as it should).
async fn wait_until_ready(http_port: u16) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{http_port}/readyz");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let mut last = String::new();
    for _ in 0..500 {
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("the service did not become ready ({url}: {last})"))
}

/// Waits until nats-server routes authorization requests to the service.
/// The service subscribes to the callout subject before it announces
/// itself as a NATS micro-service, and nats-server handles a connection's
/// subscriptions in order: once `$SRV.PING.<name>` is answered, the callout
/// subscription is in place. (A test connect before that waits out
/// nats-server's authorization timeout, 2 s, and is refused.)
async fn wait_until_answering(
    url: &str,
    login: &ServiceLogin,
    tls: Option<&DevTls>,
) -> Result<(), String> {
    let mut options = match login {
        ServiceLogin::Password { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(
                user.to_string(),
                password.to_string(),
            )
        }
        ServiceLogin::Creds(creds) => async_nats::ConnectOptions::with_credentials_file(creds)
            .await
            .map_err(|e| format!("{}: {e}", creds.display()))?,
    };
    if let Some(tls) = tls {
        options = tls.connect_as(options, &tls.service);
    }
    let client = options
        .connection_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|e| format!("cannot log in to the development nats-server as the service: {e}"))?;
    let ping = format!("$SRV.PING.{}", crate::service::MICRO_SERVICE_NAME);
    let mut last = String::new();
    for _ in 0..500 {
        let asked = client.request(ping.clone(), Default::default());
        match tokio::time::timeout(Duration::from_secs(2), asked).await {
            Ok(Ok(_)) => {
                let _ = client.drain().await;
                return Ok(());
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 2s".into(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "the service did not start answering on the development nats-server ({ping}: {last})"
    ))
}

/// Proves the whole chain works before telling the user it does.
async fn wait_until_admitted(
    url: &str,
    token: &str,
    sentinel: Option<&Path>,
    tls: Option<&DevTls>,
) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..50 {
        let mut options = match sentinel {
            None => async_nats::ConnectOptions::new(),
            Some(creds) => async_nats::ConnectOptions::with_credentials_file(creds)
                .await
                .map_err(|e| format!("{}: {e}", creds.display()))?,
        };
        if let Some(tls) = tls {
            // As a user of the printed commands connects.
            options = tls.connect_as(options, &tls.user);
        }
        match options
            .user_and_password("dev".into(), token.into())
            .connection_timeout(Duration::from_secs(3))
            .connect(url)
            .await
        {
            Ok(client) => {
                let _ = client.drain().await;
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "the development stack did not admit a test token: {last}"
    ))
}

/// What `dev` prints its instructions from.
struct Printed<'a> {
    nats_url: &'a str,
    issuer: &'a DevIssuer,
    admin: &'a str,
    /// The login session of `admin`.
    admin_sid: &'a str,
    reader: &'a str,
    dir: &'a Path,
    layout: &'a Layout,
    tls: Option<&'a DevTls>,
    http_port: u16,
}

fn instructions(p: &Printed<'_>) -> String {
    let Printed {
        nats_url,
        issuer,
        admin,
        admin_sid,
        reader,
        dir,
        layout,
        tls,
        http_port,
    } = *p;
    let iss = issuer.issuer();
    let tls_flags = tls.map(DevTls::cli_flags).unwrap_or_default();
    let cacert = tls
        .map(|t| format!("--cacert {} ", t.ca.display()))
        .unwrap_or_default();
    // The nats CLI drops --creds when --user is set (natscontext: user and
    // password win), so operator mode sends the token as --token.
    let operator = layout.sentinel.is_some();
    let login = |user: &str, var: &str| {
        if operator {
            format!("--token \"${var}\"")
        } else {
            format!("--user {user:<4} --password \"${var}\"")
        }
    };
    let mode = if operator {
        "operator mode: the sentinel credentials route the connect to the callout, the token goes beside them"
    } else {
        "any user name; the token is the password"
    };
    let creds = layout
        .sentinel
        .as_ref()
        .map(|c| format!("--creds {} ", c.display()))
        .unwrap_or_default();
    let ana = format!("{tls_flags}{creds}{}", login("ana", "ADMIN_TOKEN"));
    let rita = format!("{tls_flags}{creds}{}", login("rita", "READER_TOKEN"));
    let ci = format!("{tls_flags}{creds}{}", login("ci", "CI_TOKEN"));
    format!(
        r#"
nats-oidc-callout is answering auth callouts for {nats_url}
  OIDC issuer (development): {iss}
  generated configs:         {dir}
  service /metrics, /readyz: http://127.0.0.1:{http_port}

Tokens (valid 1h; NATS drops the connection when they expire):
ADMIN_TOKEN={admin}

READER_TOKEN={reader}
READER_INBOX={reader_inbox}   # rita's private inbox ({{{{inbox}}}}): her replies come only there

Try them with the nats CLI ({mode}):
  nats --server {nats_url} {ana} sub 'orders.>'
  nats --server {nats_url} {ana} pub orders.new hello
  nats --server {nats_url} {rita} sub 'orders.>'
  nats --server {nats_url} {rita} pub orders.new nope   # refused: reader may not publish
  nats --server {nats_url} {rita} --inbox-prefix "$READER_INBOX" ...   # requests and JetStream

Or with nothing but this binary: `try` prints nats-server's verdict for each publish and
subscription (exit status 1 when any is denied or the connect refused):
  {program} try --server {nats_url} {ana} --sub 'orders.>' --pub orders.new
  {program} try --server {nats_url} {rita} --sub 'orders.>' --pub orders.new   # the publish is denied

More tokens:
  curl {cacert}'{iss}/token?user=bo&roles=reader'

Workload identities: [[bindings]] in the generated config.toml give roles to tokens shaped as
GitHub Actions, Kubernetes and Google mint them, which the issuer mints with the claims you give:
  CI_TOKEN=$(curl -s {cacert}-d '{{"preset": "github"}}' '{iss}/token')   # acme/orders on main: binding orders-deploy
  {program} try --server {nats_url} {ci} --sub 'orders.>'
  curl -s {cacert}-d '{{"preset": "github", "claims": {{"ref": "refs/heads/dev"}}}}' '{iss}/token'   # another branch: refused
{presets}

Revocation (the list is KV bucket "{REVOCATION_BUCKET}"): the tokens covered are refused and their connections
closed; a token minted a second later (curl .../token above) is admitted:
  curl {cacert}-d sid={admin_sid} '{iss}/logout'   # ana logs out of ADMIN_TOKEN's session: the issuer sends a back-channel logout
  {program} revoke --config {config} --issuer default --sub user-rita   # an admin revokes rita: READER_TOKEN and her other tokens

Ctrl-C stops everything.
"#,
        dir = dir.display(),
        reader_inbox = nats_oidc_client::inbox::of_token(reader).unwrap_or_default(),
        program = shell_word(&this_program()),
        config = shell_word(&layout.config.display().to_string()),
        presets = issuer::presets_help(&iss),
    )
}

/// How a shell reaches this program: its name when PATH finds this very
/// binary, else its path (`cargo run -- dev`).
fn this_program() -> String {
    let Ok(me) = std::env::current_exe() else {
        return env!("CARGO_PKG_NAME").to_string();
    };
    let found = nats_server::on_path(env!("CARGO_PKG_NAME"));
    let same = found
        .and_then(|f| f.canonicalize().ok())
        .is_some_and(|f| me.canonicalize().is_ok_and(|m| m == f));
    if same {
        env!("CARGO_PKG_NAME").to_string()
    } else {
        me.display().to_string()
    }
}

/// `s` as one shell word: as it is when nothing in it is special, else in
/// single quotes.
pub(crate) fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
