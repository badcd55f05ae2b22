//! `login` and `token`: the client side, for people and scripts (see
//! `crate::client`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cli::error::CliError;
use crate::client::oauth::{BrowserOptions, DevicePrompt};
use crate::client::{
    inbox, nats_context, CachedToken, ClientError, OidcClient, Settings, SettingsInput, TokenCache,
};

/// Who to log in as, where: flags, else environment, else the `[client]`
/// table of the client config file.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Client config file with a [client] table
    /// [default: ~/.config/nats-oidc-callout/client.toml, if it exists].
    #[arg(long, env = "NATS_OIDC_CALLOUT_CLIENT_CONFIG")]
    client_config: Option<PathBuf>,
    /// The OpenID Provider's issuer URL.
    #[arg(long, env = "NATS_OIDC_CALLOUT_ISSUER")]
    issuer: Option<String>,
    /// The OAuth client id registered at the provider.
    #[arg(long, env = "NATS_OIDC_CALLOUT_CLIENT_ID")]
    client_id: Option<String>,
    /// File holding the client secret (confidential clients; client
    /// credentials). The secret may also come from
    /// $NATS_OIDC_CALLOUT_CLIENT_SECRET, never from a flag.
    #[arg(long, env = "NATS_OIDC_CALLOUT_CLIENT_SECRET_FILE")]
    client_secret_file: Option<PathBuf>,
    /// Scopes to ask for, space- or comma-separated [default: openid offline_access].
    #[arg(long, env = "NATS_OIDC_CALLOUT_SCOPES")]
    scopes: Option<String>,
    /// `audience` parameter (Auth0 and others that predate RFC 8707).
    #[arg(long, env = "NATS_OIDC_CALLOUT_AUDIENCE")]
    audience: Option<String>,
    /// RFC 8707 resource indicator: the API the token is for.
    #[arg(long, env = "NATS_OIDC_CALLOUT_RESOURCE")]
    resource: Option<String>,
    /// Also write the token into this `nats` CLI context
    /// (~/.config/nats/context/NAME.json) as its password.
    #[arg(long, value_name = "NAME")]
    nats_context: Option<String>,
    /// The NATS server URL(s) for a new --nats-context.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
}

impl ClientArgs {
    fn settings(&self, redirect_port: Option<u16>) -> Result<Settings, CliError> {
        let input = SettingsInput {
            config: self.client_config.clone(),
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret_file: self.client_secret_file.clone(),
            client_secret: std::env::var("NATS_OIDC_CALLOUT_CLIENT_SECRET")
                .ok()
                .filter(|s| !s.is_empty()),
            scopes: self.scopes.clone(),
            audience: self.audience.clone(),
            resource: self.resource.clone(),
            nats_url: self.nats_url.clone(),
            redirect_port,
        };
        Settings::resolve(input).map_err(cli_error)
    }
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Log in in a browser on this machine (authorization code + PKCE,
    /// redirect to http://127.0.0.1:PORT/callback) instead of the device flow.
    #[arg(long)]
    browser: bool,
    /// With --browser: only print the URL, do not try to open a browser.
    #[arg(long)]
    no_open: bool,
    /// With --browser: the loopback port for the redirect [default: any free port].
    #[arg(long, env = "NATS_OIDC_CALLOUT_REDIRECT_PORT")]
    redirect_port: Option<u16>,
    /// With --browser: how long to wait for the browser.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    browser_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Get the token with the client credentials grant (machines; needs
    /// the client secret) instead of a login's refresh token.
    #[arg(long)]
    client_credentials: bool,
    /// Renew the token when less than this is left of it [default: 60s,
    /// or half the token's lifetime if that is shorter]. A value larger than
    /// what is left (e.g. 1h) renews it now.
    #[arg(long, value_parser = humantime::parse_duration)]
    min_valid: Option<Duration>,
    /// Print the token user's private inbox prefix (what roles grant as
    /// `{{inbox}}`) instead of the token: for the client's inbox prefix
    /// option (nats --inbox-prefix, nats.go CustomInboxPrefix, ...).
    #[arg(long, conflicts_with = "nats_context")]
    inbox_prefix: bool,
}

/// `token` renews a token with less than this left (or less than half its
/// lifetime, for shorter-lived tokens).
const DEFAULT_MIN_VALID_SECS: u64 = 60;

fn cli_error(e: ClientError) -> CliError {
    match e {
        ClientError::Usage(text) => CliError::Usage(text),
        ClientError::Failed(text) => CliError::Failed(text),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
}

/// `login`: the device flow (or --browser), the tokens into the cache, and
/// optionally a `nats` context.
pub fn login(args: LoginArgs) -> Result<ExitCode, CliError> {
    let settings = args.client.settings(args.redirect_port)?;
    let cache = TokenCache::open_default().map_err(cli_error)?;
    let client = OidcClient::new(settings).map_err(cli_error)?;
    let token = runtime()?
        .block_on(async {
            if args.browser {
                let options = BrowserOptions {
                    open: !args.no_open,
                    timeout: args.browser_timeout,
                };
                client
                    .browser_login(&options, |url| {
                        eprintln!(
                            "To log in, open this URL in a browser on this machine:\n  {}",
                            crate::text::printable(url, 4096)
                        );
                        eprintln!("Waiting for the browser...");
                    })
                    .await
            } else {
                client.device_login(show_device_prompt).await
            }
        })
        .map_err(cli_error)?;
    cache.store(&token).map_err(cli_error)?;
    eprintln!(
        "Logged in to {} as client {}; the access token is valid until {}{}.",
        token.issuer,
        token.client_id,
        timestamp(token.valid_until()),
        if token.refresh_token.is_some() {
            " and `nats-oidc-callout token` renews it with the refresh token"
        } else {
            " (no refresh token: log in again then)"
        }
    );
    if let Some(name) = &args.client.nats_context {
        write_context(name, client.settings(), &token)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The provider's URL and code, escaped: a provider's text never paints
/// the terminal.
fn show_device_prompt(p: &DevicePrompt) {
    eprintln!(
        "To log in, open {} and enter the code {}",
        crate::text::printable(&p.verification_uri, 512),
        crate::text::printable(&p.user_code, 64)
    );
    if let Some(complete) = &p.verification_uri_complete {
        eprintln!("  (or open {})", crate::text::printable(complete, 512));
    }
    eprintln!(
        "Waiting for the login (the code expires in {}s)...",
        p.expires_in.as_secs()
    );
}

/// `token`: a currently valid access token on stdout (or into a `nats`
/// context), from the cache, refreshed, or by client credentials.
pub fn token(args: TokenArgs) -> Result<ExitCode, CliError> {
    let settings = args.client.settings(None)?;
    let cache = TokenCache::open_default().map_err(cli_error)?;
    let fresh = |t: &CachedToken| match args.min_valid {
        Some(d) => t.valid_for(d.as_secs()),
        None => t.fresh_for(DEFAULT_MIN_VALID_SECS),
    };
    let cached = cache
        .load(&settings.issuer, &settings.client_id)
        .map_err(cli_error)?;
    let token = match cached {
        Some(t) if fresh(&t) => t,
        cached => {
            let client = OidcClient::new(settings.clone()).map_err(cli_error)?;
            let refresh = cached.as_ref().and_then(|t| t.refresh_token.clone());
            let fresh = (if args.client_credentials {
                runtime()?.block_on(client.client_credentials())
            } else if let Some(refresh) = refresh {
                let result = runtime()?.block_on(client.refresh(&refresh));
                if let Err(ClientError::Failed(text)) = &result {
                    // A refused refresh token is useless: forget the login.
                    if text.contains("refused the refresh: invalid_grant") {
                        let _ = cache.remove(&settings.issuer, &settings.client_id);
                    }
                }
                result
            } else {
                Err(ClientError::Failed(match cached {
                    Some(t) => format!(
                        "the token of client {} at {} expired at {} and there is no refresh token: run `nats-oidc-callout login`",
                        settings.client_id,
                        settings.issuer,
                        timestamp(t.valid_until())
                    ),
                    None => format!(
                        "not logged in as client {} at {}: run `nats-oidc-callout login` (or `token --client-credentials` for a machine client)",
                        settings.client_id, settings.issuer
                    ),
                }))
            })
            .map_err(cli_error)?;
            cache.store(&fresh).map_err(cli_error)?;
            fresh
        }
    };
    match &args.client.nats_context {
        Some(name) => write_context(name, &settings, &token)?,
        None if args.inbox_prefix => println!(
            "{}",
            inbox::of_token(&token.access_token).map_err(cli_error)?
        ),
        None => println!("{}", token.access_token),
    }
    Ok(ExitCode::SUCCESS)
}

fn write_context(name: &str, settings: &Settings, token: &CachedToken) -> Result<(), CliError> {
    let until = timestamp(token.valid_until());
    let description = format!(
        "OIDC login of {} at {} (nats-oidc-callout; the password is an access token valid until {until})",
        settings.client_id, settings.issuer
    );
    // Roles that grant {{inbox}} expect replies there; a token that names
    // no user (no iss or sub) leaves the context's inbox prefix alone.
    let inbox = inbox::of_token(&token.access_token).ok();
    let path = nats_context::write(
        name,
        settings.nats_url.as_deref(),
        &token.access_token,
        inbox.as_deref(),
        &description,
    )
    .map_err(cli_error)?;
    eprintln!(
        "Wrote the nats context {name} ({}); its token is valid until {until}: `nats-oidc-callout token --nats-context {name}` renews it.",
        path.display()
    );
    Ok(())
}

fn timestamp(secs: u64) -> String {
    jiff::Timestamp::from_second(secs as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| format!("{secs} (Unix time)"))
}
