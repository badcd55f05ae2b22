//! The client side: getting, caching and refreshing the OIDC access tokens
//! that people and programs present to NATS as their password.
//!
//! Layer 6, beside `cli` and `dev`: it talks to the identity provider (with
//! `openidconnect`), never to the service's layers, and none of them
//! imports it. Access tokens are never verified here (the service does
//! that) and never logged or printed except by `token`, which is asked to.

pub mod cache;
pub mod inbox;
pub mod nats_context;
pub mod oauth;
mod private_dir;
pub mod settings;
pub mod source;

pub use cache::{CachedToken, Grant, LoginKey, TokenCache};
pub use oauth::OidcClient;
pub use settings::{Settings, SettingsInput};
pub use source::TokenSource;

/// Why a client-side step failed: one line, never a token or a secret.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Settings are missing or wrong (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The provider, the network or the file system said no (exit status 1).
    #[error("{0}")]
    Failed(String),
}

impl ClientError {
    pub(crate) fn failed(text: impl Into<String>) -> Self {
        ClientError::Failed(text.into())
    }
}

/// Text from a provider or a library, made safe for one line of output:
/// control characters (escape sequences, newlines) and invisible or
/// reordering characters written as escapes (`\u{1b}`), cut at 300
/// characters. A provider's text never paints the terminal.
pub(crate) fn one_line(text: &str) -> String {
    crate::text::printable(text.trim(), 300)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The user's home directory, from $HOME.
pub(crate) fn home_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(std::path::PathBuf::from)
}

/// An XDG base directory: `$<var>` if set to an absolute path, else
/// `~/<fallback>`.
pub(crate) fn xdg_dir(var: &str, fallback: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(var)
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home_dir().map(|h| h.join(fallback)))
}

/// Writes `bytes` to `path` readable by its owner only (0600), replacing it
/// atomically (a temporary file in the same directory, renamed over it), so
/// a reader never sees half a file. Every directory below `base` on the way
/// is made, or checked to be, this user's alone (see `private_dir`).
pub(crate) fn write_private(
    base: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<(), ClientError> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| ClientError::failed(format!("{} has no directory", path.display())))?;
    private_dir::secure_dir(base, dir, true)?;
    let fail = |e: std::io::Error| {
        ClientError::failed(format!("cannot write {}: {}", path.display(), e.kind()))
    };
    // tempfile creates the file with mode 0600.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.as_file().sync_all().map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// Reads a secret file, when it is there, through directories below `base`
/// that are this user's alone.
pub(crate) fn read_private(
    base: &std::path::Path,
    path: &std::path::Path,
) -> Result<Option<String>, ClientError> {
    let dir = path
        .parent()
        .ok_or_else(|| ClientError::failed(format!("{} has no directory", path.display())))?;
    if !private_dir::secure_dir(base, dir, false)? || !private_dir::check_file(path)? {
        return Ok(None);
    }
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClientError::failed(format!(
            "cannot read {}: {}",
            path.display(),
            e.kind()
        ))),
    }
}

/// The entries of a directory of secrets, when it is there, checked as
/// `read_private` checks the directories on the way.
pub(crate) fn list_private(
    base: &std::path::Path,
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, ClientError> {
    if !private_dir::secure_dir(base, dir, false)? {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ClientError::failed(format!("cannot read {}: {}", dir.display(), e.kind())))?;
    Ok(entries.filter_map(Result::ok).map(|e| e.path()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_text_is_one_bounded_escaped_line() {
        assert_eq!(one_line(" a\nb\r\tc "), "a\\nb\\r\\tc");
        assert_eq!(one_line("x\u{1b}[2J\u{202e}"), "x\\u{1b}[2J\\u{202e}");
        let long = "x".repeat(400);
        assert_eq!(one_line(&long).len(), 303);
    }
}
