//! `login` and `token`: the client side, for people and scripts (see the
//! `nats_oidc_client` crate).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cli::error::CliError;
use nats_oidc_client::oauth::{BrowserOptions, DevicePrompt, Revocable};
use nats_oidc_client::{
    inbox, nats_context, CachedToken, ClientError, Grant, LoginKey, OidcClient, Settings,
    SettingsInput, TokenCache,
};

/// Who to log in as, where: flags, else environment, else the `[client]`
/// table of the client config file.
#[derive(Args, Clone, Debug)]
pub(super) struct ClientArgs {
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
    /// PEM file of the CA(s) that sign the provider's certificate (a
    /// private CA); when set, only these are trusted, not the built-in roots.
    #[arg(long, value_name = "FILE", env = "NATS_OIDC_CALLOUT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Also write the token into this `nats` CLI context
    /// (~/.config/nats/context/NAME.json) as its password.
    #[arg(long, value_name = "NAME")]
    nats_context: Option<String>,
    /// The NATS server URL(s) for a new --nats-context.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Operator mode: the sentinel credentials file the --nats-context
    /// logs in with (with the token as its connect token).
    #[arg(long, value_name = "FILE", env = "NATS_OIDC_CALLOUT_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
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
            nats_creds: self.nats_creds.clone(),
            redirect_port,
            ca_file: self.ca_file.clone(),
        };
        Settings::resolve(input).map_err(cli_error)
    }
}

#[derive(Args, Debug)]
pub(super) struct LoginArgs {
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
pub(super) struct TokenArgs {
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
pub(super) fn login(args: LoginArgs) -> Result<ExitCode, CliError> {
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
    // Whose login this is, as the token says: a login finished by someone
    // else's browser shows here.
    let holder = nats_oidc_client::oauth::holder_of(&token.access_token)
        .map(|h| format!(" as {h}"))
        .unwrap_or_default();
    eprintln!(
        "Logged in to {}{holder} (client {}); the access token is valid until {}{}.",
        token.key.issuer,
        token.key.client_id,
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
pub(super) fn token(args: TokenArgs) -> Result<ExitCode, CliError> {
    let settings = args.client.settings(None)?;
    let cache = TokenCache::open_default().map_err(cli_error)?;
    let fresh = |t: &CachedToken| match args.min_valid {
        Some(d) => t.valid_for(d.as_secs()),
        None => t.fresh_for(DEFAULT_MIN_VALID_SECS),
    };
    let grant = if args.client_credentials {
        Grant::ClientCredentials
    } else {
        Grant::Login
    };
    let key = LoginKey::new(&settings, grant);
    let cached = cache.load(&key).map_err(cli_error)?;
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
                        let _ = cache.remove(&key);
                    }
                }
                result
            } else {
                Err(ClientError::Failed(match cached {
                    Some(t) => format!(
                        "the token of {} expired at {} and there is no refresh token: run `nats-oidc-callout login`",
                        key.describe(),
                        timestamp(t.valid_until())
                    ),
                    None => not_logged_in(&cache, &key),
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

/// Why `token` has nothing to give: no login of this client at all, or
/// one obtained for other scopes, another resource or audience, or the
/// other grant (a token serves only what obtained it).
fn not_logged_in(cache: &TokenCache, key: &LoginKey) -> String {
    let logins = cache
        .logins_of(&key.issuer, &key.client_id)
        .unwrap_or_default();
    if !logins.is_empty() && logins.iter().all(|l| l.grant.is_none()) {
        return format!(
            "the cached login of {} was made by an older version, which kept no record of its scopes and resource: run `nats-oidc-callout login` again",
            key.describe()
        );
    }
    let others = logins.len();
    let hint = "run `nats-oidc-callout login` with the same settings (or `token --client-credentials` for a machine client)";
    if others > 0 {
        format!(
            "no token for {}: the cached login of this client was obtained with other settings (scopes, resource, audience or grant), and a token serves only those; {hint}",
            key.describe()
        )
    } else {
        format!("not logged in as {}: {hint}", key.describe())
    }
}

fn write_context(name: &str, settings: &Settings, token: &CachedToken) -> Result<(), CliError> {
    let until = timestamp(token.valid_until());
    let who = format!("{} at {}", settings.client_id, settings.issuer);
    let description = nats_context::description(&who, &until);
    // Roles that grant {{inbox}} expect replies there; a token that names
    // no user (no iss or sub) leaves the context's inbox prefix alone.
    let inbox = inbox::of_token(&token.access_token).ok();
    let (path, removed) = nats_context::write(
        name,
        &nats_context::ContextLogin {
            url: settings.nats_url.as_deref(),
            access_token: &token.access_token,
            inbox_prefix: inbox.as_deref(),
            creds: settings.nats_creds.as_deref(),
            description: &description,
        },
    )
    .map_err(cli_error)?;
    eprintln!(
        "Wrote the nats context {name} ({}); its token is valid until {until}: `nats-oidc-callout token --nats-context {name}` renews it.",
        path.display()
    );
    if !removed.is_empty() {
        eprintln!(
            "The context logged in another way too, which the nats CLI refuses beside the token: removed {}.",
            removed.join(", ")
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub(super) struct LogoutArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only forget the tokens here; do not ask the provider to revoke the
    /// refresh token (when it cannot be reached).
    #[arg(long)]
    local_only: bool,
}

/// `logout`: revokes the refresh tokens of this client's logins at the
/// provider (RFC 7009, when discovery names a revocation endpoint),
/// deletes the cached tokens, and takes the token out of the named `nats`
/// context. A revocation that fails leaves everything in place (exit 1),
/// so running it again can still revoke.
pub(super) fn logout(args: LogoutArgs) -> Result<ExitCode, CliError> {
    let settings = args.client.settings(None)?;
    if let Some(name) = &args.client.nats_context {
        // Refused before anything is revoked or deleted.
        nats_context::check_forget(name).map_err(cli_error)?;
    }
    let cache = TokenCache::open_default().map_err(cli_error)?;
    let logins = cache
        .logins_of(&settings.issuer, &settings.client_id)
        .map_err(cli_error)?;
    let who = format!("client {} at {}", settings.client_id, settings.issuer);
    let mut unrevoked = false;
    let mut last_valid = None::<u64>;
    if !args.local_only && !logins.is_empty() {
        let client = OidcClient::new(settings.clone()).map_err(cli_error)?;
        let runtime = runtime()?;
        let mut revoked = 0;
        for login in &logins {
            // A machine's client credentials have no refresh token: its
            // access token expires on its own.
            let Some(refresh) = login.refresh_token.as_deref() else {
                continue;
            };
            match runtime.block_on(client.revoke(Revocable::Refresh(refresh))) {
                Ok(true) => revoked += 1,
                Ok(false) => unrevoked = true,
                Err(e) => {
                    let done = match revoked {
                        0 => String::new(),
                        n => format!(
                            " ({n} other refresh token{} revoked already)",
                            if n == 1 { "" } else { "s" }
                        ),
                    };
                    return Err(CliError::Failed(format!(
                        "{e}; nothing was deleted{done}: run logout again, or logout --local-only to only forget the tokens here"
                    )));
                }
            }
        }
    }
    for login in &logins {
        cache.delete(login).map_err(cli_error)?;
        last_valid = last_valid.max(login.valid_until);
    }
    let had_refresh = logins.iter().any(|l| l.refresh_token.is_some());
    match logins.len() {
        0 => eprintln!("No cached tokens of {who}."),
        n => eprintln!(
            "Deleted the cached tokens of {who} ({n} login{}).",
            if n == 1 { "" } else { "s" }
        ),
    }
    if had_refresh {
        if args.local_only {
            eprintln!("The refresh token was not revoked (--local-only): the provider accepts it until it expires.");
        } else if unrevoked {
            eprintln!(
                "{} publishes no revocation_endpoint, so the refresh token could not be revoked: the provider accepts it until it expires; end the session at the provider (its account page) to stop it now.",
                settings.issuer
            );
        } else {
            eprintln!("The refresh token was revoked at {}.", settings.issuer);
        }
    }
    if let Some(until) = last_valid {
        if until > crate::clock::unix_now() {
            eprintln!(
                "An access token already handed out (to a nats context or a program) is accepted by NATS until it expires, at {}.",
                timestamp(until)
            );
        }
    }
    if let Some(name) = &args.client.nats_context {
        match nats_context::forget(name).map_err(cli_error)? {
            Some(path) => eprintln!(
                "Took the token out of the nats context {name} ({}).",
                path.display()
            ),
            None => eprintln!("There is no nats context {name}."),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn timestamp(secs: u64) -> String {
    jiff::Timestamp::from_second(secs as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| format!("{secs} (Unix time)"))
}
