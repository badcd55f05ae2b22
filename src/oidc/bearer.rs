//! `oidc.bearer_token_file`: the caller's own token, for issuers whose
//! discovery and JWKS want one (a Kubernetes API server without anonymous
//! discovery). Read again at each fetch (kubelet rotates it), and sent only
//! to the origins of the URLs the config names: never to one a fetched
//! document names, so a discovery document cannot send it elsewhere.

use std::path::Path;
use std::sync::Arc;

use crate::oidc::discovery::FetchError;
use crate::oidc::settings::Settings;
use crate::tls::{file_error, Reloading, TlsFileError};

#[derive(Clone)]
pub(crate) struct Bearer {
    token: Arc<Reloading<String>>,
    origins: Vec<url::Origin>,
}

impl Bearer {
    /// The token in `path`, for the origins of `oidc`'s discovery and JWKS
    /// URLs.
    pub(crate) fn new(oidc: &Settings, path: &Path) -> Result<Bearer, FetchError> {
        let token = Reloading::new(
            "oidc.bearer_token_file",
            vec![path.to_path_buf()],
            |files| bearer_token(&files[0].0, &files[0].1),
        )
        .map_err(|e| FetchError::File {
            key: "oidc.bearer_token_file",
            error: e.to_string(),
        })?;
        let origins = [Some(&oidc.discovery_url), oidc.jwks_url.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|u| url::Url::parse(u).ok())
            .map(|u| u.origin())
            .collect();
        Ok(Bearer {
            token: Arc::new(token),
            origins,
        })
    }

    pub(crate) fn may_go_to(&self, url: &str) -> bool {
        url::Url::parse(url).is_ok_and(|u| self.origins.contains(&u.origin()))
    }

    /// The token as the file holds it now (or the last usable one).
    pub(crate) fn current(&self) -> Arc<String> {
        self.token.current()
    }
}

/// A bearer token file: one token, as kubelet projects it (a trailing
/// newline is not part of it).
pub(crate) fn bearer_token(path: &Path, bytes: &[u8]) -> Result<String, TlsFileError> {
    let token = std::str::from_utf8(bytes)
        .map_err(|_| file_error(path, "is not text"))?
        .trim();
    if token.is_empty() {
        return Err(file_error(path, "is empty"));
    }
    if token.len() > 64 * 1024 {
        return Err(file_error(path, "is larger than 64 KiB: not a token"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(file_error(
            path,
            "holds more than one token (spaces, line breaks or control characters inside)",
        ));
    }
    Ok(token.to_string())
}
