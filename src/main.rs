use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use nats_oidc_callout::config::{self, Config};
use nats_oidc_callout::service::Service;

/// Log in to NATS with OIDC tokens: an auth callout service.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file [default: $NATS_OIDC_CALLOUT_CONFIG, else /etc/nats-oidc-callout/config.toml]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "NATS_OIDC_CALLOUT_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Run,
    /// Validate the config file fully, print warnings about risky choices, exit.
    Check,
    /// Validate a token as the service would and show the verdict, roles,
    /// permissions and expiry. Reads the token from stdin when --token is
    /// absent or "-" (keeps it out of the process list and shell history).
    Explain {
        #[arg(long)]
        token: Option<String>,
    },
    /// Run only the development OIDC issuer on 127.0.0.1 (for the podman pod
    /// in infrastructure/). Signs any token asked of it: never for production.
    DevIssuer {
        #[arg(long, default_value_t = 8081)]
        port: u16,
    },
    /// Generate an nkey seed: "account" for callout.issuer_seed, "curve" for
    /// callout.xkey_seed. Writes the seed to --out (mode 0600) or stdout and
    /// the public key (for nats-server's auth_callout block) to stderr.
    Keygen {
        kind: KeyKind,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the public key of a seed file (account A... or curve X...).
    Pubkey { seed_file: PathBuf },
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
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyKind {
    Account,
    Curve,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Some(Command::Dev {
        nats_port,
        issuer_port,
        tools_dir,
    }) = cli.command
    {
        let opts = nats_oidc_callout::dev::DevOptions {
            nats_port,
            issuer_port,
            tools_dir: tools_dir.unwrap_or_else(default_tools_dir),
        };
        return block_on(async { nats_oidc_callout::dev::run(opts, shutdown_signal()).await });
    }
    match &cli.command {
        Some(Command::Keygen { kind, out }) => return keygen(*kind, out.as_deref()),
        Some(Command::Pubkey { seed_file }) => return pubkey(seed_file),
        Some(Command::HashPassword { cost }) => return hash_password(*cost),
        _ => {}
    }
    if let Some(Command::DevIssuer { port }) = cli.command {
        return block_on(async move {
            let issuer = nats_oidc_callout::dev_issuer::DevIssuer::start(port)
                .await
                .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
            eprintln!(
                "DEVELOPMENT OIDC ISSUER at {iss} (throwaway keys; signs any token asked of it; never for production)\n\
                 tokens: curl '{iss}/token?user=ana&roles=admin'",
                iss = issuer.issuer()
            );
            shutdown_signal().await;
            Ok(())
        });
    }
    let path = config::resolve_path(cli.config);
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            let warnings = nats_oidc_callout::check::warnings(&config);
            for w in &warnings {
                println!("warning: {w}");
            }
            println!(
                "config {} is valid ({} warning{})",
                path.display(),
                warnings.len(),
                if warnings.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Command::Explain { token } => {
            let token = match token.filter(|t| t != "-") {
                Some(t) => t,
                None => {
                    let mut t = String::new();
                    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut t) {
                        eprintln!("error: cannot read the token from stdin: {e}");
                        return ExitCode::from(2);
                    }
                    t
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let explanation =
                runtime.block_on(nats_oidc_callout::explain::explain(&config, &token));
            print!("{}", explanation.text);
            if explanation.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Health { url } => {
            let Some(url) = url.or_else(|| {
                config
                    .http
                    .as_ref()
                    .map(|h| format!("http://{}/readyz", h.listen))
            }) else {
                eprintln!("error: no http.listen in {} and no --url", path.display());
                return ExitCode::from(2);
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let status = runtime.block_on(async {
                reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(3))
                    .build()
                    .map_err(|e| e.to_string())?
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status())
                    .map_err(|e| e.to_string())
            });
            match status {
                Ok(s) if s.is_success() => ExitCode::SUCCESS,
                Ok(s) => {
                    eprintln!("not ready: {url} answered {s}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("not ready: {url}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run => block_on(async { Service::new(config)?.run(shutdown_signal()).await }),
        Command::Dev { .. }
        | Command::DevIssuer { .. }
        | Command::Keygen { .. }
        | Command::HashPassword { .. }
        | Command::Pubkey { .. } => {
            unreachable!("handled above")
        }
    }
}

fn hash_password(cost: u32) -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("error: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("error: the password is empty");
        return ExitCode::from(2);
    }
    // bcrypt reads at most 72 bytes; a longer password would be checked by
    // its first 72 only, which its owner would not expect.
    if password.len() > 72 {
        eprintln!(
            "error: bcrypt uses at most 72 bytes of a password; this one has {}",
            password.len()
        );
        return ExitCode::from(2);
    }
    match bcrypt::hash(password, cost) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(kind: KeyKind, out: Option<&std::path::Path>) -> ExitCode {
    let (seed, public) = match kind {
        KeyKind::Account => {
            let kp = nkeys::KeyPair::new_account();
            (kp.seed().expect("fresh key has a seed"), kp.public_key())
        }
        KeyKind::Curve => {
            let xk = nkeys::XKey::new();
            (xk.seed().expect("fresh key has a seed"), xk.public_key())
        }
    };
    match out {
        None => println!("{seed}"),
        Some(path) => {
            if path.exists() {
                eprintln!("error: {} exists; not overwriting a seed", path.display());
                return ExitCode::from(2);
            }
            if let Err(e) = write_private(path, &format!("{seed}\n")) {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!("{public}");
    ExitCode::SUCCESS
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

fn pubkey(seed_file: &std::path::Path) -> ExitCode {
    use nats_oidc_callout::secrets::{read_seed_file, SeedKind};
    let text = match std::fs::read_to_string(seed_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", seed_file.display());
            return ExitCode::from(2);
        }
    };
    // The kind is in the seed's prefix (SA account, SX curve), not anywhere in it.
    let kind = match text.lines().map(str::trim).find(|l| l.starts_with('S')) {
        Some(l) if l.starts_with("SX") => SeedKind::Curve,
        _ => SeedKind::Account,
    };
    let public = read_seed_file(seed_file, kind).and_then(|seed| match kind {
        SeedKind::Curve => nkeys::XKey::from_seed(&seed)
            .map(|k| k.public_key())
            .map_err(|e| e.to_string()),
        _ => nkeys::KeyPair::from_seed(&seed)
            .map(|k| k.public_key())
            .map_err(|e| e.to_string()),
    });
    match public {
        Ok(p) => {
            println!("{p}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn default_tools_dir() -> PathBuf {
    let local = PathBuf::from(".tools");
    if local.join("bin").join("nats-server").exists() {
        return local;
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("nats-oidc-callout")
}

fn block_on(work: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
