//! Where the client's settings come from: flags, then environment
//! variables (clap reads both), then the `[client]` table of the client
//! config file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ClientError;

/// The scopes asked for when none are configured: an OpenID Connect login
/// with a refresh token.
pub const DEFAULT_SCOPES: &[&str] = &["openid", "offline_access"];

/// The user name written into `nats` contexts and sent by the example
/// client. The service ignores it for token logins; it only has to be
/// non-empty for the `nats` CLI to send a password, and must not be the
/// name of a `[users.*]` entry.
pub const NATS_USER: &str = "oidc";

/// The settings of one OAuth client at one issuer.
#[derive(Clone)]
pub struct Settings {
    pub issuer: String,
    pub client_id: String,
    /// For confidential clients (and client credentials). Never printed.
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    /// Sent as `audience` (Auth0 and others that predate RFC 8707).
    pub audience: Option<String>,
    /// Sent as `resource` (RFC 8707 resource indicator).
    pub resource: Option<String>,
    /// The NATS server URL(s) written into `nats` contexts.
    pub nats_url: Option<String>,
    /// The sentinel credentials written into `nats` contexts for an
    /// operator-mode deployment (see `nats_context`).
    pub nats_creds: Option<PathBuf>,
    /// Loopback port for `login --browser` (0: any free port).
    pub redirect_port: u16,
    /// A PEM bundle of the CAs the provider's certificate must chain to:
    /// when set, only these are trusted (a private CA), not the built-in
    /// roots (Mozilla's, compiled in; the system's trust store is never
    /// read).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .field("resource", &self.resource)
            .field("nats_creds", &self.nats_creds)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// What flags and environment variables said (each `None` when neither did).
#[derive(Clone, Debug, Default)]
pub struct SettingsInput {
    /// The client config file named by flag or environment (must exist).
    pub config: Option<PathBuf>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// The secret itself (only from the environment, never a flag).
    pub client_secret: Option<String>,
    /// Space- or comma-separated.
    pub scopes: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub nats_url: Option<String>,
    pub nats_creds: Option<PathBuf>,
    pub redirect_port: Option<u16>,
    pub ca_file: Option<PathBuf>,
}

/// The `[client]` table of the client config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClient {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    scopes: Option<Vec<String>>,
    audience: Option<String>,
    resource: Option<String>,
    nats_url: Option<String>,
    nats_creds: Option<PathBuf>,
    redirect_port: Option<u16>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoot {
    #[serde(default)]
    client: FileClient,
}

/// The client config file read when none is named:
/// `$XDG_CONFIG_HOME/nats-oidc-callout/client.toml`, else
/// `~/.config/nats-oidc-callout/client.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    super::dirs::xdg_dir("XDG_CONFIG_HOME", ".config")
        .map(|d| d.join("nats-oidc-callout").join("client.toml"))
}

impl Settings {
    /// Flags and environment first, then the config file (the named one,
    /// which must exist, or the default one, if it exists).
    pub fn resolve(input: SettingsInput) -> Result<Settings, ClientError> {
        let (file, file_path) = match &input.config {
            Some(path) => (Some(read_file(path)?), Some(path.clone())),
            None => match default_config_path().filter(|p| p.exists()) {
                Some(path) => (Some(read_file(&path)?), Some(path)),
                None => (None, None),
            },
        };
        let file = file.unwrap_or_default();
        let relative = |p: PathBuf| match (&file_path, p.is_relative()) {
            (Some(f), true) => f.parent().map(|d| d.join(&p)).unwrap_or(p),
            _ => p,
        };
        let from = file_path
            .as_ref()
            .map(|p| format!(" (nor in {})", p.display()))
            .unwrap_or_else(|| " (and no client config file)".to_string());
        let issuer = input.issuer.or(file.issuer).ok_or_else(|| {
            ClientError::Usage(format!(
                "no issuer: --issuer, NATS_OIDC_CALLOUT_ISSUER or issuer in [client]{from}"
            ))
        })?;
        // Exactly as given: it must equal the discovery document's issuer,
        // trailing slash and all (Auth0's ends in one).
        check_issuer(&issuer)?;
        let client_id = input.client_id.or(file.client_id).ok_or_else(|| {
            ClientError::Usage(format!(
                "no client id: --client-id, NATS_OIDC_CALLOUT_CLIENT_ID or client_id in [client]{from}"
            ))
        })?;
        let secret_file = input
            .client_secret_file
            .or(file.client_secret_file.map(relative));
        let client_secret = match (input.client_secret, secret_file) {
            (Some(s), _) => Some(s),
            (None, Some(path)) => Some(read_secret(&path)?),
            (None, None) => None,
        };
        let scopes = match input.scopes {
            Some(s) => s
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            None => file
                .scopes
                .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect()),
        };
        let ca_file = input.ca_file.or(file.ca_file.map(relative));
        if let Some(path) = &ca_file {
            // Checked now for a precise error; read again by `OidcClient`.
            super::ca::ca_bundle(path)?;
        }
        Ok(Settings {
            issuer,
            client_id,
            client_secret,
            scopes,
            audience: input.audience.or(file.audience),
            resource: input.resource.or(file.resource),
            nats_url: input.nats_url.or(file.nats_url),
            nats_creds: input.nats_creds.or(file.nats_creds.map(relative)),
            redirect_port: input.redirect_port.or(file.redirect_port).unwrap_or(0),
            ca_file,
        })
    }
}

impl Settings {
    /// The scopes a grant asks for: all of them for a person's login; for
    /// client credentials, not `openid` and `offline_access` (they mean
    /// nothing to a machine and some providers refuse them there).
    pub fn scopes_for(&self, grant: super::cache::Grant) -> Vec<String> {
        let machine_drops: &[&str] = match grant {
            super::cache::Grant::Login => &[],
            super::cache::Grant::ClientCredentials => &["openid", "offline_access"],
        };
        self.scopes
            .iter()
            .filter(|s| !machine_drops.contains(&s.as_str()))
            .cloned()
            .collect()
    }
}

fn read_file(path: &Path) -> Result<FileClient, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Usage(format!(
            "cannot read the client config {}: {}",
            path.display(),
            e.kind()
        ))
    })?;
    let root: FileRoot = toml::from_str(&text).map_err(|e| {
        ClientError::Usage(format!(
            "{}: {}",
            path.display(),
            super::text::escaped_line(e.message())
        ))
    })?;
    Ok(root.client)
}

fn read_secret(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Usage(format!(
            "cannot read the client secret file {}: {}",
            path.display(),
            e.kind()
        ))
    })?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(ClientError::Usage(format!(
            "the client secret file {} is empty",
            path.display()
        )));
    }
    Ok(secret)
}

/// An issuer must be https, except on loopback (where http is allowed for
/// local providers and tests), as the service requires.
fn check_issuer(issuer: &str) -> Result<(), ClientError> {
    check_endpoint(issuer)
        .map_err(|reason| ClientError::Usage(format!("issuer {issuer:?} {reason}")))
}

/// The same rule for an endpoint the provider names: https, or http on
/// loopback. Err says why not.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("must be https (http only on loopback)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(config: &Path) -> SettingsInput {
        SettingsInput {
            config: Some(config.to_path_buf()),
            ..SettingsInput::default()
        }
    }

    #[test]
    fn flags_win_over_the_file_and_paths_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(
            &path,
            "[client]\nissuer = \"https://id.example.com/\"\nclient_id = \"cli\"\n\
             client_secret_file = \"secret\"\nscopes = [\"openid\", \"nats\"]\nresource = \"urn:nats\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
        let s = Settings::resolve(SettingsInput {
            client_id: Some("other".into()),
            ..input(&path)
        })
        .unwrap();
        assert_eq!(s.issuer, "https://id.example.com/");
        assert_eq!(s.client_id, "other");
        assert_eq!(s.client_secret.as_deref(), Some("s3cret"));
        assert_eq!(s.scopes, ["openid", "nats"]);
        assert_eq!(s.resource.as_deref(), Some("urn:nats"));
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn missing_and_wrong_settings_say_where_to_put_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, "[client]\nclient_id = \"cli\"\n").unwrap();
        let e = Settings::resolve(input(&path)).unwrap_err().to_string();
        assert!(e.starts_with("no issuer: --issuer"), "{e}");
        std::fs::write(&path, "[client]\nissuer = \"http://id.example.com\"\n").unwrap();
        let e = Settings::resolve(input(&path)).unwrap_err().to_string();
        assert!(e.contains("must be https"), "{e}");
        std::fs::write(&path, "[client]\nisuer = \"x\"\n").unwrap();
        let e = Settings::resolve(input(&path)).unwrap_err().to_string();
        assert!(e.contains("unknown field `isuer`"), "{e}");
        let e = Settings::resolve(input(&dir.path().join("absent.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the client config"), "{e}");
    }

    #[test]
    fn ca_file_is_relative_to_the_file_checked_at_once_and_not_a_way_around_https() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(
            &path,
            "[client]\nissuer = \"https://id.example.com\"\nclient_id = \"cli\"\nca_file = \"ca.pem\"\n",
        )
        .unwrap();
        let e = Settings::resolve(input(&path)).unwrap_err().to_string();
        let expected = format!("ca_file {}: not found", dir.path().join("ca.pem").display());
        assert_eq!(e, expected);
        // A CA of one's own does not make plain http acceptable off loopback.
        let e = Settings::resolve(SettingsInput {
            issuer: Some("http://id.example.com".into()),
            ..input(&path)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("must be https (http only on loopback)"), "{e}");
    }
}
