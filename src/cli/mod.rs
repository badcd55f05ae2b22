//! The command line: one subcommand per job, dispatched in one place.

mod accounts;
pub(crate) mod check;
mod error;
mod explain;
mod health;
mod json_log;
mod keys;
mod login;
mod online;
mod revoke;
mod try_grants;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::service::Service;
pub(crate) use error::CliError;

/// Log in to NATS with OIDC tokens: an auth callout service.
#[derive(Parser)]
#[command(name = "nats-oidc-callout", version, about)]
pub struct Cli {
    /// Config file of run, check, accounts, explain, revoke, health and
    /// sentinel (the others refuse it) [default: $NATS_OIDC_CALLOUT_CONFIG,
    /// else /etc/nats-oidc-callout/config.toml]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "NATS_OIDC_CALLOUT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Run,
    /// Validate the config file, print warnings about risky choices, exit
    /// (2 on an invalid config). With --online also fetch every issuer's
    /// discovery document and keys, connect to NATS with the configured
    /// login, subscribe to the callout subject and (server mode) make one
    /// probe connect to see that nats-server's requests open and verify
    /// with this config's keys (exit 1 if a step fails).
    Check {
        #[arg(long)]
        online: bool,
        /// With --online: a .creds file of a system-account user, to
        /// compare nats-server's imports with what [jetstream] needs.
        #[arg(long, requires = "online", conflicts_with = "system_user")]
        system_creds: Option<PathBuf>,
        /// With --online: a system-account user (its password in
        /// $NATS_OIDC_CALLOUT_SYSTEM_PASSWORD), as --system-creds.
        #[arg(long, requires = "online")]
        system_user: Option<String>,
    },
    /// Print what nats-server needs for the JetStream/KV grants: the
    /// exports of the account holding the streams ([jetstream] account) and
    /// the imports of each account users land in, as nats-server config
    /// (server mode) or nsc commands (operator mode).
    Accounts {
        #[arg(long, value_enum)]
        format: Option<accounts::Format>,
    },
    /// Validate a token as the service would and show the verdict, roles,
    /// permissions and expiry. Reads the token from stdin when --token is
    /// absent or "-" (keeps it out of the process list and shell history).
    Explain {
        #[arg(long)]
        token: Option<String>,
    },
    /// Run only the development OIDC issuer on 127.0.0.1 (for the podman pod
    /// in infrastructure/, or to try [[bindings]]): GET /token?user=&roles=
    /// mints a user's token, POST /token a workload's (GitHub Actions,
    /// Kubernetes, Google shapes, with the claims asked for). Signs any
    /// token asked of it: never for production.
    DevIssuer {
        #[arg(long, default_value_t = 8081)]
        port: u16,
    },
    /// Generate an nkey seed: "account" for callout.issuer_seed, "curve" for
    /// callout.xkey_seed, "user" for nats.nkey_seed_file (the service's own
    /// login, listed in auth_callout's auth_users) or a [users.<name>] nkey.
    /// Writes the seed to --out (mode 0600) or stdout and the public key
    /// (A..., X... or U..., for nats-server's config) to stderr.
    Keygen {
        kind: keys::KeyKind,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the public key of a seed file (account A..., curve X... or user
    /// U...).
    Pubkey { seed_file: PathBuf },
    /// Operator mode: write the sentinel credentials clients present (with
    /// their token as the password) so that nats-server sends their connect
    /// to the callout: a bearer user of the callout account, signed by
    /// callout.issuer_seed, that may neither publish nor subscribe.
    Sentinel {
        /// Where to write the .creds file (mode 0600; never replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// Read a password from stdin and print its bcrypt hash, for
    /// `password_bcrypt` in a [users.<name>] table.
    HashPassword {
        /// bcrypt cost: each step doubles the work of a check (and of a guess).
        #[arg(long, default_value_t = 11, value_parser = clap::value_parser!(u32).range(10..=16))]
        cost: u32,
    },
    /// Exit 0 if the running service is ready (GET /readyz on http.listen):
    /// for container health checks.
    Health {
        /// URL to probe instead of http://<http.listen>/readyz.
        #[arg(long)]
        url: Option<String>,
    },
    /// Log in to the OpenID Provider for NATS: the device flow (prints a URL
    /// and a code to enter anywhere), or --browser on this machine. Keeps the
    /// tokens in the user's cache (0600), never prints them.
    Login(login::LoginArgs),
    /// Print a currently valid access token (refreshed when near expiry, or
    /// by --client-credentials), for `nats --user oidc --password "$(...)"`;
    /// or write it into a nats context with --nats-context.
    Token(login::TokenArgs),
    /// Revoke tokens of one issuer now: every token of a subject (--sub), a
    /// login session (--sid) or a NATS user name (--user) issued until now
    /// is refused by the running service (refusal code "revoked"), and a new
    /// login is admitted. Puts an entry into revocation.kv_bucket with the
    /// service's own [nats] login.
    Revoke(revoke::RevokeArgs),
    /// Log out: revoke the refresh token at the provider (RFC 7009, where it
    /// offers revocation), delete this client's cached tokens, and with
    /// --nats-context take the token out of that context.
    Logout(login::LogoutArgs),
    /// Connect to nats-server as a client and try the publishes and
    /// subscriptions named, printing nats-server's own verdict for each
    /// (allowed, or its permissions violation; or its refusal of the
    /// connect). Takes the nats CLI's login flags; each attempt is a
    /// connection of its own.
    Try(try_grants::TryArgs),
    /// Run a throwaway local stack (development issuer, nats-server, this
    /// service) and print tokens to try. Never for production.
    Dev {
        /// Port for nats-server on 127.0.0.1.
        #[arg(long, default_value_t = 4222)]
        nats_port: u16,
        /// Port for the development OIDC issuer on 127.0.0.1 (0 picks one).
        #[arg(long, default_value_t = 0)]
        issuer_port: u16,
        /// Where to install nats-server if none (2.10+) is found
        /// [default: ./.tools if it has one, else ~/.cache/nats-oidc-callout].
        #[arg(long)]
        tools_dir: Option<PathBuf>,
        /// Run nats-server in operator mode: an operator, accounts as JWTs,
        /// the callout switched on in the callout account's JWT, and
        /// sentinel credentials for clients.
        #[arg(long)]
        operator: bool,
        /// TLS everywhere: a throwaway private CA, nats-server asking every
        /// client for a certificate (`verify: true`), the issuer over HTTPS;
        /// the printed commands carry the CA and a client certificate.
        #[arg(long)]
        tls: bool,
    },
}

impl Command {
    /// Why `--config` makes no sense here: the commands that read no
    /// config file refuse it rather than ignore it.
    fn refuses_config(&self) -> Option<&'static str> {
        match self {
            Command::Dev { .. } => Some(
                "dev reads no config file: it writes its own (with throwaway keys) into a temporary directory and prints where (\"generated configs:\"); to run the service with your file: nats-oidc-callout run --config FILE",
            ),
            Command::DevIssuer { .. } => Some("dev-issuer reads no config file (only --port)"),
            Command::Keygen { .. } | Command::Pubkey { .. } | Command::HashPassword { .. } => {
                Some("this command reads no config file")
            }
            Command::Try(_) => Some(
                "try reads no config file: it connects as a client with the flags given (--server, --user, --password, --creds, --tls*)",
            ),
            Command::Login(_) | Command::Token(_) | Command::Logout(_) => Some(
                "login, token and logout read no service config: their settings are a client config file (--client-config FILE) and flags",
            ),
            Command::Run
            | Command::Check { .. }
            | Command::Accounts { .. }
            | Command::Explain { .. }
            | Command::Revoke(_)
            | Command::Health { .. }
            | Command::Sentinel { .. } => None,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The system-account password of `check --online --system-user`.
const SYSTEM_PASSWORD_ENV: &str = "NATS_OIDC_CALLOUT_SYSTEM_PASSWORD";

/// Runs the command the line asks for.
pub fn run(cli: Cli) -> ExitCode {
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // The service's own failures also go to its log.
            if matches!(e, CliError::Service(_)) {
                tracing::error!("{e}");
            }
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    let config_path = || config::resolve_path(cli.config.clone());
    let load = || Config::load(&config_path());
    let command = cli.command.unwrap_or(Command::Run);
    if let (Some(path), Some(refusal)) = (&cli.config, command.refuses_config()) {
        return Err(CliError::Usage(format!(
            "--config {}: {refusal}",
            path.display()
        )));
    }
    match command {
        Command::Run => {
            let config = load()?;
            block_on(async {
                let service = Service::new(config)?;
                // Caught from the service's first wait for it on: until
                // then (its first NATS connect, retried) a signal ends it.
                match tokio::spawn(service.run(async { shutdown_signal().await })).await {
                    Ok(outcome) => outcome.map_err(CliError::from),
                    Err(e) => Err(CliError::Failed(format!("the service stopped: {e}"))),
                }
            })??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            online,
            system_creds,
            system_user,
        } => {
            let config = load()?;
            let code = check::run(&config, &config_path())?;
            if !online {
                return Ok(code);
            }
            let system = match (system_creds, system_user) {
                (Some(creds), _) => Some(config::NatsAuth::CredsFile(creds)),
                (None, Some(user)) => Some(config::NatsAuth::UserPassword {
                    user,
                    password: std::env::var(SYSTEM_PASSWORD_ENV).map_err(|_| {
                        CliError::Usage(format!(
                            "--system-user needs the password in ${SYSTEM_PASSWORD_ENV} (never a flag: it would show in ps)"
                        ))
                    })?,
                }),
                (None, None) => None,
            };
            let report = block_on(online::run(&config, system))?;
            println!(
                "online check: {} error{}, {} warning{}",
                report.errors,
                if report.errors == 1 { "" } else { "s" },
                report.warnings,
                if report.warnings == 1 { "" } else { "s" }
            );
            Ok(if report.errors > 0 {
                ExitCode::FAILURE
            } else {
                code
            })
        }
        Command::Explain { token } => explain::run(&load()?, token),
        Command::Revoke(args) => revoke::run(&load()?, args),
        Command::Accounts { format } => accounts::run(&load()?, format),
        Command::Health { url } => health::run(&load()?, &config_path(), url),
        Command::Keygen { kind, out } => keys::keygen(kind, out.as_deref()),
        Command::Pubkey { seed_file } => keys::pubkey(&seed_file),
        Command::Sentinel { out } => keys::sentinel(&load()?, &out),
        Command::HashPassword { cost } => keys::hash_password(cost),
        Command::Login(args) => login::login(args),
        Command::Token(args) => login::token(args),
        Command::Logout(args) => login::logout(args),
        Command::Try(args) => try_grants::run(args),
        Command::DevIssuer { port } => {
            block_on(async { crate::dev::issuer::run_standalone(port, shutdown_signal()).await })?
                .map(|()| ExitCode::SUCCESS)
                .map_err(CliError::Failed)
        }
        Command::Dev {
            nats_port,
            issuer_port,
            tools_dir,
            operator,
            tls,
        } => {
            let opts = crate::dev::DevOptions {
                nats_port,
                issuer_port,
                tools_dir: tools_dir.unwrap_or_else(default_tools_dir),
                operator,
                tls,
            };
            // Caught before dev makes its temporary directory (throwaway
            // seeds): Ctrl-C while the stack starts removes it too.
            block_on(async { crate::dev::run(opts, shutdown_signal()).await })?
                .map_err(CliError::Failed)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn default_tools_dir() -> PathBuf {
    let local = PathBuf::from(".tools");
    if local.join("bin").join("nats-server").exists() {
        return local;
    }
    let cache = nats_oidc_client::dirs::xdg_dir("XDG_CACHE_HOME", ".cache")
        .unwrap_or_else(std::env::temp_dir);
    cache.join("nats-oidc-callout")
}

/// Runs `work` on a fresh multi-threaded runtime.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T, CliError> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    Ok(runtime.block_on(work))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. Both are caught from the
/// moment this is called (inside the runtime), not from the first poll:
/// until then they end the process as usual.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
    };
    #[cfg(not(unix))]
    let signals = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    async move {
        signals.await;
        tracing::info!("shutdown requested");
    }
}

impl Cli {
    /// The log level unless RUST_LOG says otherwise: `explain` and `check`
    /// print a report on stdout, which the service's own INFO lines (keys
    /// loaded, NATS connected) on stderr would only interleave with.
    fn log_level(&self) -> &'static str {
        match self.command {
            Some(Command::Explain { .. } | Command::Check { .. }) => "warn",
            _ => "info",
        }
    }

    /// async-nats's log level unless RUST_LOG names it: `revoke` and `try`
    /// say how it went in a line or a few, which the client's "connected"
    /// and "closed" lines on stderr would bury.
    fn nats_log_level(&self) -> &'static str {
        match self.command {
            Some(Command::Revoke(_) | Command::Try(_)) => "warn",
            _ => self.log_level(),
        }
    }
}

/// Logs go to stderr; text for people, JSON for collectors.
pub fn init_logging(cli: &Cli) {
    // async-nats logs server URLs, credentials included, at debug level:
    // only a RUST_LOG that names it turns that on.
    let nats = format!("async_nats={}", cli.nats_log_level());
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log_level().into());
    let directives = if directives.contains("async_nats") {
        directives
    } else {
        format!("{directives},{nats}")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(directives).unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},{nats}", cli.log_level()))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.event_format(json_log::JsonLines).init(),
    }
}
