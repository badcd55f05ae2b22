//! `nats` CLI contexts: `$XDG_CONFIG_HOME/nats/context/NAME.json` (else
//! `~/.config/nats/context/NAME.json`), the JSON the CLI itself reads
//! (nats-io/jsm.go `natscontext`: "description", "url", "user",
//! "password", "token", "creds", "nkey", "inbox_prefix",
//! "jetstream_api_prefix", ...). See `write` for how the token reaches
//! the callout through it.

use std::path::{Path, PathBuf};

use super::settings::NATS_USER;
use super::ClientError;

/// Where the `nats` CLI keeps the context `name`. Names follow the CLI's
/// own rule: not empty, no `..`, no `/`.
pub fn path(name: &str) -> Result<PathBuf, ClientError> {
    Ok(located(name)?.1)
}

/// The user's config directory (trusted) and the context's file below it.
fn located(name: &str) -> Result<(PathBuf, PathBuf), ClientError> {
    if name.is_empty() || name.contains("..") || name.contains('/') {
        return Err(ClientError::Usage(format!(
            "invalid nats context name {name:?}"
        )));
    }
    let parent = super::dirs::xdg_dir("XDG_CONFIG_HOME", ".config").ok_or_else(|| {
        ClientError::Usage("no config directory: set HOME or XDG_CONFIG_HOME".into())
    })?;
    let file = parent
        .join("nats")
        .join("context")
        .join(format!("{name}.json"));
    Ok((parent, file))
}

/// Marks the contexts this client wrote (in their description), so
/// `logout` changes no context it did not write.
const MARK: &str = "(nats-oidc-callout;";

/// What a context logs in with.
pub struct ContextLogin<'a> {
    /// The server URL(s); needed for a new context.
    pub url: Option<&'a str>,
    pub access_token: &'a str,
    /// The token user's private inbox, when known.
    pub inbox_prefix: Option<&'a str>,
    /// Sentinel credentials (operator mode).
    pub creds: Option<&'a Path>,
    /// Who and until when, for `nats context ls`.
    pub description: &'a str,
}

/// Credentials of other kinds, which the CLI would use instead of (or
/// refuse beside) the token.
const OTHER_LOGINS: &[&str] = &["nkey", "user_jwt", "user_seed", "nsc"];

/// Writes or updates the context `name` to log in with the access token.
///
/// The CLI (jsm.go `natscontext.NATSOptions`) uses `user` and `password`
/// when `user` is set and then ignores `creds`; it adds `token` whatever
/// else is set. So in server mode the token is the password of user
/// `oidc`; with sentinel credentials (given now, or already in the
/// context) it is `creds` plus `token`, and `user` and `password` go.
/// Other logins (an nkey, a user JWT, an nsc lookup) are removed: the CLI
/// refuses a context with two kinds. Every other setting of an existing
/// context (TLS files, JetStream domain or API prefix...) stays.
/// Returns the file and the other logins it removed (for the message).
pub fn write(name: &str, login: &ContextLogin<'_>) -> Result<(PathBuf, Vec<String>), ClientError> {
    let (base, path) = located(name)?;
    let mut context = read(&base, &path)?.unwrap_or_default();
    match login.url {
        Some(url) => {
            context.insert("url".into(), url.into());
        }
        None if context
            .get("url")
            .and_then(|u| u.as_str())
            .is_some_and(|u| !u.is_empty()) => {}
        None => {
            return Err(ClientError::Usage(format!(
                "the new nats context {name:?} needs a server URL: --nats-url, NATS_URL or nats_url in [client]"
            )))
        }
    }
    if let Some(creds) = login.creds {
        context.insert("creds".into(), sentinel_path(creds)?.into());
    }
    let has_creds = context
        .get("creds")
        .and_then(|c| c.as_str())
        .is_some_and(|c| !c.is_empty());
    let removed: Vec<String> = OTHER_LOGINS
        .iter()
        .filter(|key| {
            context
                .remove(**key)
                .is_some_and(|v| v != "" && !v.is_null())
        })
        .map(|key| key.to_string())
        .collect();
    if has_creds {
        context.remove("user");
        context.remove("password");
        context.insert("token".into(), login.access_token.into());
    } else {
        context.remove("token");
        context.insert("user".into(), NATS_USER.into());
        context.insert("password".into(), login.access_token.into());
    }
    context.insert("description".into(), login.description.into());
    if let Some(prefix) = login.inbox_prefix {
        context.insert("inbox_prefix".into(), prefix.into());
    }
    Ok((save(&base, &path, context)?, removed))
}

/// Takes the token out of a context this client wrote (`logout`): its
/// password, or its token in operator mode. The URL, creds, inbox prefix
/// and every other setting stay, so `login --nats-context` fills it again.
/// Returns None when there is no such context; refuses one this client did
/// not write.
pub fn forget(name: &str) -> Result<Option<PathBuf>, ClientError> {
    let (base, path) = located(name)?;
    let Some(mut context) = ours(name, &base, &path)? else {
        return Ok(None);
    };
    context.remove("password");
    context.remove("token");
    if context.get("user").and_then(|u| u.as_str()) == Some(NATS_USER) {
        context.remove("user");
    }
    context.insert(
        "description".into(),
        format!("logged out {MARK} `nats-oidc-callout login --nats-context {name}` logs in again)")
            .into(),
    );
    save(&base, &path, context).map(Some)
}

/// Checks, changing nothing, that `forget` may change the context `name`.
pub fn check_forget(name: &str) -> Result<(), ClientError> {
    let (base, path) = located(name)?;
    ours(name, &base, &path).map(|_| ())
}

/// The context, when there is one and this client wrote it.
fn ours(name: &str, base: &Path, path: &Path) -> Result<Option<Object>, ClientError> {
    let Some(context) = read(base, path)? else {
        return Ok(None);
    };
    let description = context
        .get("description")
        .and_then(|d| d.as_str())
        .unwrap_or("");
    if !description.contains(MARK) {
        return Err(ClientError::failed(format!(
            "the nats context {name:?} ({}) was not written by nats-oidc-callout; not changed",
            path.display()
        )));
    }
    Ok(Some(context))
}

/// A description this client writes for a context it logs in with.
pub fn description(who: &str, until: &str) -> String {
    format!("OIDC login of {who} {MARK} the token is valid until {until})")
}

type Object = serde_json::Map<String, serde_json::Value>;

fn read(base: &Path, path: &Path) -> Result<Option<Object>, ClientError> {
    match super::read_private(base, path)? {
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
            _ => Err(ClientError::failed(format!(
                "{} is not a nats context (a JSON object); not changed",
                path.display()
            ))),
        },
        None => Ok(None),
    }
}

fn save(base: &Path, path: &Path, context: Object) -> Result<PathBuf, ClientError> {
    let mut text = serde_json::to_vec_pretty(&serde_json::Value::Object(context))
        .map_err(|e| ClientError::failed(format!("cannot encode the context: {e}")))?;
    text.push(b'\n');
    super::replace_private(base, path, &text)?;
    Ok(path.to_path_buf())
}

/// The sentinel credentials' absolute path (the CLI reads it from any
/// directory), once it is seen to hold a user JWT.
fn sentinel_path(creds: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(creds).map_err(|e| {
        ClientError::Usage(format!(
            "cannot read the sentinel credentials {}: {}",
            creds.display(),
            e.kind()
        ))
    })?;
    if !text.contains("-----BEGIN NATS USER JWT-----") {
        return Err(ClientError::Usage(format!(
            "{} holds no user JWT: --nats-creds takes the sentinel's .creds file (`nats-oidc-callout sentinel` writes one)",
            creds.display()
        )));
    }
    let absolute = std::path::absolute(creds)
        .map_err(|e| ClientError::Usage(format!("{}: {}", creds.display(), e.kind())))?;
    absolute
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| ClientError::Usage(format!("{} is not UTF-8", absolute.display())))
}
