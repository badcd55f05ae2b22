//! `nats` CLI contexts: `$XDG_CONFIG_HOME/nats/context/NAME.json` (else
//! `~/.config/nats/context/NAME.json`), the JSON the CLI itself reads
//! (nats-io/jsm.go `natscontext`: "description", "url", "user",
//! "password", "token", "creds", "nkey", "inbox_prefix",
//! "jetstream_api_prefix", ...). With "user" set the CLI
//! logs in with user and password, which is how the token reaches the
//! callout.

use std::path::PathBuf;

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
    let parent = super::xdg_dir("XDG_CONFIG_HOME", ".config").ok_or_else(|| {
        ClientError::Usage("no config directory: set HOME or XDG_CONFIG_HOME".into())
    })?;
    let file = parent
        .join("nats")
        .join("context")
        .join(format!("{name}.json"));
    Ok((parent, file))
}

/// Writes or updates the context `name`: its user and password (the
/// token), its inbox prefix (the token user's private inbox, when known),
/// its description, and its URL when one is given. Every other setting of
/// an existing context (TLS files, JetStream domain or API prefix,
/// creds...) stays; the CLI uses user and password before any creds, nkey
/// or token.
pub fn write(
    name: &str,
    url: Option<&str>,
    access_token: &str,
    inbox_prefix: Option<&str>,
    description: &str,
) -> Result<PathBuf, ClientError> {
    let (base, path) = located(name)?;
    let mut context = match super::read_private(&base, &path)? {
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(ClientError::failed(format!(
                    "{} is not a nats context (a JSON object); not changed",
                    path.display()
                )))
            }
        },
        None => serde_json::Map::new(),
    };
    match url {
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
    context.insert("description".into(), description.into());
    context.insert("user".into(), NATS_USER.into());
    context.insert("password".into(), access_token.into());
    if let Some(prefix) = inbox_prefix {
        context.insert("inbox_prefix".into(), prefix.into());
    }
    let mut text = serde_json::to_vec_pretty(&serde_json::Value::Object(context))
        .map_err(|e| ClientError::failed(format!("cannot encode the context: {e}")))?;
    text.push(b'\n');
    super::write_private(&base, &path, &text)?;
    Ok(path)
}
