//! Where the client keeps its files: XDG base directories.

use std::path::PathBuf;

/// The user's home directory, from `$HOME` (unset or empty: none).
fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// An XDG base directory: `$<var>` if set to an absolute path, else
/// `~/<fallback>`; none when neither is known.
///
/// ```
/// let cache = nats_oidc_client::dirs::xdg_dir("XDG_CACHE_HOME", ".cache");
/// assert!(cache.is_none_or(|d| d.is_absolute()));
/// ```
pub fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home_dir().map(|h| h.join(fallback)))
}
