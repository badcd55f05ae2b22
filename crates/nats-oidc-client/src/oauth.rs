//! The OAuth 2.0 / OpenID Connect exchanges, done by `openidconnect`:
//! discovery, the device authorization grant (RFC 8628), the authorization
//! code flow with PKCE (S256) and a loopback redirect (RFC 8252), refresh,
//! and client credentials. Every grant carries the configured `resource`
//! (RFC 8707) and `audience`.

use std::time::Duration;

use jsonwebtoken::get_current_timestamp;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreDeviceAuthorizationResponse, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType, CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    DeviceAuthorizationUrl, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, ProviderMetadata, RedirectUrl, RefreshToken, RequestTokenError,
    RevocationUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};

use super::cache::{CachedToken, Grant, LoginKey};
use super::loopback::{self, Start};
use super::settings::Settings;
use super::text::{escaped_line, printable};
use super::ClientError;

/// Discovery with the endpoints OpenID Connect Discovery leaves out (RFC
/// 8628's and RFC 7009's, from RFC 8414 metadata).
#[derive(Clone, Debug, Deserialize, Serialize)]
struct ExtraEndpoints {
    #[serde(default)]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
    #[serde(default)]
    revocation_endpoint: Option<RevocationUrl>,
}
impl AdditionalProviderMetadata for ExtraEndpoints {}

type Metadata = ProviderMetadata<
    ExtraEndpoints,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// A client with only its token endpoint set: what every grant needs.
type TokenClient =
    CoreClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The device flow polls no faster than this (RFC 8628's default),
/// whatever interval the provider names.
pub const MIN_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// What a person must do to approve a device login.
pub struct DevicePrompt {
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub user_code: String,
    pub expires_in: Duration,
}

/// A token to revoke.
pub enum Revocable<'a> {
    Refresh(&'a str),
    Access(&'a str),
}

/// How `login --browser` reaches the user's browser.
pub struct BrowserOptions {
    /// Try `xdg-open`/`open` on the URL (it is always printed too).
    pub open: bool,
    /// How long to wait for the redirect back.
    pub timeout: Duration,
}

/// One OAuth client (id, secret, scopes, resource) at one issuer.
pub struct OidcClient {
    settings: Settings,
    http: reqwest::Client,
    metadata: tokio::sync::OnceCell<Metadata>,
}

impl OidcClient {
    /// Every request to the provider (discovery, JWKS, device
    /// authorization, token, revocation) goes through the one HTTP client
    /// made here, so `ca_file` applies to all of them.
    pub fn new(settings: Settings) -> Result<OidcClient, ClientError> {
        let mut builder = reqwest::Client::builder()
            // Following redirects would open the token exchanges to SSRF.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("nats-oidc-callout/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            builder = trust_only(builder, path)?;
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::failed(format!("cannot make an HTTP client: {e}")))?;
        Ok(OidcClient {
            settings,
            http,
            metadata: tokio::sync::OnceCell::new(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn metadata(&self) -> Result<&Metadata, ClientError> {
        self.metadata
            .get_or_try_init(|| async {
                let issuer = IssuerUrl::new(self.settings.issuer.clone())
                    .map_err(|e| ClientError::Usage(format!("issuer: {e}")))?;
                Metadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| {
                        ClientError::failed(format!(
                            "cannot read the discovery document of {}: {}",
                            self.settings.issuer,
                            self.http_error(&e)
                        ))
                    })
            })
            .await
    }

    async fn token_client(&self) -> Result<TokenClient, ClientError> {
        let metadata = self.metadata().await?;
        let token_url = metadata.token_endpoint().cloned().ok_or_else(|| {
            ClientError::failed(format!(
                "{} publishes no token endpoint",
                self.settings.issuer
            ))
        })?;
        let mut client = CoreClient::new(
            ClientId::new(self.settings.client_id.clone()),
            metadata.issuer().clone(),
            metadata.jwks().clone(),
        )
        .set_token_uri(token_url);
        if let Some(secret) = &self.settings.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        Ok(client)
    }

    /// The scopes `grant` asks for, less `drop`.
    fn scopes(&self, grant: Grant, drop: &[&str]) -> Vec<Scope> {
        self.settings
            .scopes_for(grant)
            .into_iter()
            .filter(|s| !drop.contains(&s.as_str()))
            .map(Scope::new)
            .collect()
    }

    /// The RFC 8707 `resource` and the `audience` parameters, as configured.
    fn target_params(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        if let Some(r) = &self.settings.resource {
            params.push(("resource", r.clone()));
        }
        if let Some(a) = &self.settings.audience {
            params.push(("audience", a.clone()));
        }
        params
    }

    /// The device authorization grant: asks for a user code, shows it with
    /// `prompt`, then polls the token endpoint at the provider's interval
    /// (slower after each `slow_down`) until the person approves or denies,
    /// or the code expires.
    pub async fn device_login(
        &self,
        prompt: impl FnOnce(&DevicePrompt),
    ) -> Result<CachedToken, ClientError> {
        let metadata = self.metadata().await?;
        let device_url = metadata
            .additional_metadata()
            .device_authorization_endpoint
            .clone()
            .ok_or_else(|| {
                ClientError::failed(format!(
                    "{} publishes no device_authorization_endpoint: it does not offer the device flow; use login --browser",
                    self.settings.issuer
                ))
            })?;
        let client = self
            .token_client()
            .await?
            .set_device_authorization_url(device_url);
        let mut request = client
            .exchange_device_code()
            .add_scopes(self.scopes(Grant::Login, &[]));
        for (name, value) in self.target_params() {
            request = request.add_extra_param(name, value);
        }
        let details: CoreDeviceAuthorizationResponse = request
            .request_async(&self.http)
            .await
            .map_err(|e| self.refused("the device authorization request", e))?;
        prompt(&DevicePrompt {
            verification_uri: details.verification_uri().to_string(),
            verification_uri_complete: details
                .verification_uri_complete()
                .map(|u| u.secret().to_string()),
            user_code: details.user_code().secret().to_string(),
            expires_in: details.expires_in(),
        });
        let mut poll = client.exchange_device_access_token(&details);
        for (name, value) in self.target_params() {
            poll = poll.add_extra_param(name, value);
        }
        // RFC 8628's 5 s whatever the provider says (an interval of 0
        // would make this a tight loop); slow_down adds to it.
        let response = poll
            .request_async(
                &self.http,
                |interval| tokio::time::sleep(interval.max(MIN_POLL_INTERVAL)),
                None,
            )
            .await
            .map_err(|e| self.refused("the device login", e))?;
        self.cached(&response, Grant::Login, None)
    }

    /// The authorization code flow with PKCE (S256): a redirect to
    /// `http://127.0.0.1:<port>/callback`, where this process listens for
    /// exactly one answer carrying the state it sent.
    pub async fn browser_login(
        &self,
        options: &BrowserOptions,
        show: impl FnOnce(&str),
    ) -> Result<CachedToken, ClientError> {
        let metadata = self.metadata().await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.settings.redirect_port))
            .await
            .map_err(|e| {
                ClientError::failed(format!(
                    "cannot listen on 127.0.0.1:{} for the redirect: {}",
                    self.settings.redirect_port,
                    e.kind()
                ))
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| ClientError::failed(format!("loopback listener: {e}")))?
            .port();
        let redirect = RedirectUrl::new(format!("http://127.0.0.1:{port}/callback"))
            .map_err(|e| ClientError::failed(format!("redirect URL: {e}")))?;
        let client = self
            .token_client()
            .await?
            .set_auth_uri(metadata.authorization_endpoint().clone())
            .set_redirect_uri(redirect.clone());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        // openidconnect adds "openid" itself.
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(self.scopes(Grant::Login, &["openid"]))
            .set_pkce_challenge(challenge);
        for (name, value) in self.target_params() {
            request = request.add_extra_param(name, value);
        }
        let (url, state, _nonce) = request.url();
        show(url.as_str());
        // The browser is sent to a one-time local address that redirects to
        // the provider: the URL with the state and PKCE challenge never
        // shows in the opener's argv, which every local user can read.
        let start = Start::new(
            format!("/start/{}", CsrfToken::new_random().secret()),
            url.to_string(),
        );
        if options.open {
            open_browser(&format!("http://127.0.0.1:{port}{}", start.path));
        }
        let answer = tokio::time::timeout(
            options.timeout,
            loopback::wait_for_redirect(&listener, state.secret(), std::sync::Arc::new(start)),
        )
        .await
        .map_err(|_| {
            ClientError::failed(format!(
                "no answer from the browser within {}s; run login again",
                options.timeout.as_secs()
            ))
        })??;
        // RFC 9207: when the provider names itself, it must be this issuer.
        if let Some(iss) = &answer.iss {
            if iss.trim_end_matches('/') != self.settings.issuer.trim_end_matches('/') {
                return Err(ClientError::failed(format!(
                    "the redirect came from issuer {:?}, not {}",
                    escaped_line(iss),
                    self.settings.issuer
                )));
            }
        }
        let code = match (answer.code, answer.error) {
            (_, Some(error)) => {
                return Err(ClientError::failed(format!(
                    "the login was refused by the provider: {}{}",
                    escaped_line(&error),
                    answer
                        .error_description
                        .map(|d| format!(" ({})", escaped_line(&d)))
                        .unwrap_or_default()
                )))
            }
            (Some(code), None) => code,
            (None, None) => {
                return Err(ClientError::failed(
                    "the redirect carried neither a code nor an error",
                ))
            }
        };
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .set_redirect_uri(std::borrow::Cow::Owned(redirect));
        for (name, value) in self.target_params() {
            exchange = exchange.add_extra_param(name, value);
        }
        let response = exchange
            .request_async(&self.http)
            .await
            .map_err(|e| self.refused("the code exchange", e))?;
        self.cached(&response, Grant::Login, None)
    }

    /// A new access token for a refresh token. Keeps the old refresh token
    /// when the provider does not rotate it.
    pub async fn refresh(&self, refresh_token: &str) -> Result<CachedToken, ClientError> {
        let client = self.token_client().await?;
        let token = RefreshToken::new(refresh_token.to_string());
        let mut request = client.exchange_refresh_token(&token);
        for (name, value) in self.target_params() {
            request = request.add_extra_param(name, value);
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| self.refused("the refresh", e))?;
        self.cached(&response, Grant::Login, Some(refresh_token))
    }

    /// Client credentials (machines): the client's own secret buys a token.
    pub async fn client_credentials(&self) -> Result<CachedToken, ClientError> {
        if self.settings.client_secret.is_none() {
            return Err(ClientError::Usage(
                "client credentials need a client secret: --client-secret-file, NATS_OIDC_CALLOUT_CLIENT_SECRET or client_secret_file in [client]".into(),
            ));
        }
        let client = self.token_client().await?;
        let mut request = client
            .exchange_client_credentials()
            .add_scopes(self.scopes(Grant::ClientCredentials, &[]));
        for (name, value) in self.target_params() {
            request = request.add_extra_param(name, value);
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| self.refused("the client credentials grant", e))?;
        self.cached(&response, Grant::ClientCredentials, None)
    }

    /// Revokes a token at the provider (RFC 7009): a refresh token, or an
    /// access token. Ok(false) when the provider publishes no revocation
    /// endpoint (nothing was sent). A token the provider no longer knows
    /// counts as revoked (RFC 7009 answers 200 for those too).
    ///
    /// The request is made here rather than by `oauth2`, which refuses an
    /// http endpoint even on loopback, where this client allows an issuer.
    pub async fn revoke(&self, token: Revocable<'_>) -> Result<bool, ClientError> {
        let metadata = self.metadata().await?;
        let Some(url) = metadata.additional_metadata().revocation_endpoint.clone() else {
            return Ok(false);
        };
        super::settings::check_endpoint(url.as_str()).map_err(|reason| {
            ClientError::failed(format!(
                "{} names the revocation endpoint {}: {reason}",
                self.settings.issuer,
                escaped_line(url.as_str())
            ))
        })?;
        let (value, hint) = match token {
            Revocable::Refresh(t) => (t, "refresh_token"),
            Revocable::Access(t) => (t, "access_token"),
        };
        let mut form = vec![("token", value), ("token_type_hint", hint)];
        let mut request = self.http.post(url.url().clone());
        match &self.settings.client_secret {
            // client_secret_basic: each part form-encoded (RFC 6749 2.3.1).
            Some(secret) => {
                let encode = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                request =
                    request.basic_auth(encode(&self.settings.client_id), Some(encode(secret)));
            }
            // A public client names itself in the body (RFC 7009 2.1).
            None => form.push(("client_id", &self.settings.client_id)),
        }
        let response = request.form(&form).send().await.map_err(|e| {
            ClientError::failed(format!(
                "the revocation failed: cannot reach {}: {}",
                self.settings.issuer,
                self.http_error(&e)
            ))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(true);
        }
        // An error body is read up to 64 KiB: enough for any error JSON.
        let mut bytes = Vec::new();
        let mut response = response;
        while let Ok(Some(chunk)) = response.chunk().await {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > 64 * 1024 {
                break;
            }
        }
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let code = body["error"].as_str().unwrap_or("no error code");
        let description = body["error_description"]
            .as_str()
            .map(|d| format!(" ({})", escaped_line(d)))
            .unwrap_or_default();
        Err(ClientError::failed(format!(
            "{} refused the revocation: HTTP {}, {}{description}",
            self.settings.issuer,
            status.as_u16(),
            printable(code, 64)
        )))
    }

    /// A failed request to the provider on one line; a certificate that
    /// chains to no trusted CA also says what to trust (rustls only says
    /// "UnknownIssuer").
    fn http_error(&self, e: &dyn std::error::Error) -> String {
        let text = error_chain(e);
        if !text.contains("UnknownIssuer") {
            return text;
        }
        match &self.settings.ca_file {
            None => format!(
                "{text}: the provider's certificate is signed by no CA of the built-in roots (Mozilla's; the system's trust store is not read); for a private CA, set ca_file in [client] (or --ca-file) to the CA's PEM file"
            ),
            Some(path) => format!(
                "{text}: the provider's certificate is not signed by a CA of ca_file {} (only those are trusted)",
                path.display()
            ),
        }
    }

    /// What the provider returned, for the cache: nothing it did not send
    /// (the ID token is not kept: nothing here uses it).
    fn cached(
        &self,
        response: &CoreTokenResponse,
        grant: Grant,
        old_refresh: Option<&str>,
    ) -> Result<CachedToken, ClientError> {
        let obtained_at = get_current_timestamp();
        let access_token = response.access_token().secret().to_string();
        // `token` prints it and contexts store it: only what a bearer token
        // may hold (RFC 6750 b64token), so a provider cannot hide terminal
        // escapes or a second line in it.
        for (what, t) in [
            ("access", Some(access_token.as_str())),
            (
                "refresh",
                response.refresh_token().map(|t| t.secret().as_str()),
            ),
        ] {
            if let Some(t) = t {
                if !is_b64token(t) {
                    return Err(ClientError::failed(format!(
                        "{} returned a{} {what} token with characters a bearer token cannot have; it was not kept",
                        self.settings.issuer,
                        if what == "access" { "n" } else { "" }
                    )));
                }
            }
        }
        let expires_at = response
            .expires_in()
            .map(|d| obtained_at + d.as_secs())
            .or_else(|| jwt_exp(&access_token));
        // Read only to reject a response without one; never verified here.
        let _ = response.id_token();
        Ok(CachedToken {
            key: LoginKey::new(&self.settings, grant),
            access_token,
            token_type: response.token_type().as_ref().to_string(),
            obtained_at,
            expires_at,
            refresh_token: response
                .refresh_token()
                .map(|t| t.secret().to_string())
                .or_else(|| old_refresh.map(str::to_string)),
            scope: response
                .scopes()
                .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        })
    }

    /// One line for a failed exchange: the provider's error code and
    /// description, or what went wrong on the way.
    fn refused<RE, T>(&self, what: &str, e: RequestTokenError<RE, T>) -> ClientError
    where
        RE: std::error::Error + 'static,
        T: openidconnect::ErrorResponse + Serialize + 'static,
    {
        match e {
            RequestTokenError::ServerResponse(r) => {
                let value = serde_json::to_value(&r).unwrap_or_default();
                let code = value["error"]
                    .as_str()
                    .unwrap_or("unknown_error")
                    .to_string();
                let description = value["error_description"]
                    .as_str()
                    .map(|d| format!(" ({})", escaped_line(d)))
                    .unwrap_or_default();
                let hint = match code.as_str() {
                    "invalid_client" | "unauthorized_client" => format!(
                        ": check the client id {:?} (and its secret) registered at {}",
                        self.settings.client_id, self.settings.issuer
                    ),
                    "access_denied" => ": the login was denied".to_string(),
                    "expired_token" => {
                        ": the code expired before the login was approved; run login again"
                            .to_string()
                    }
                    "invalid_grant" if what == "the refresh" => {
                        ": the refresh token is no longer accepted; run `nats-oidc-callout login` again"
                            .to_string()
                    }
                    "invalid_target" => format!(
                        ": the provider does not know the resource {:?}",
                        self.settings.resource.as_deref().unwrap_or("")
                    ),
                    "invalid_scope" => format!(
                        ": check the scopes {:?}",
                        self.settings.scopes.join(" ")
                    ),
                    _ => String::new(),
                };
                ClientError::failed(format!(
                    "{} refused {what}: {}{description}{hint}",
                    self.settings.issuer,
                    printable(&code, 64)
                ))
            }
            RequestTokenError::Request(e) => ClientError::failed(format!(
                "{what} failed: cannot reach {}: {}",
                self.settings.issuer,
                self.http_error(&e)
            )),
            RequestTokenError::Parse(e, _) => ClientError::failed(format!(
                "{what} failed: {} answered something that is not a token response ({})",
                self.settings.issuer,
                escaped_line(&e.to_string())
            )),
            RequestTokenError::Other(text) => {
                ClientError::failed(format!("{what} failed: {}", escaped_line(&text)))
            }
        }
    }
}

/// Trusts the CAs of `ca_file` and nothing else: a private CA is not mixed
/// with the built-in roots, as with the nats CLI's `--tlsca`.
fn trust_only(
    builder: reqwest::ClientBuilder,
    ca_file: &std::path::Path,
) -> Result<reqwest::ClientBuilder, ClientError> {
    let mut builder = builder.tls_built_in_root_certs(false);
    for der in super::ca::ca_bundle(ca_file)? {
        let cert = reqwest::Certificate::from_der(&der).map_err(|e| {
            ClientError::Usage(format!(
                "ca_file {}: {}",
                ca_file.display(),
                error_chain(&e)
            ))
        })?;
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

/// RFC 6750's b64token: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+"
/// / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    escaped_line(&text)
}

/// The `exp` of a JWT access token, read without verifying it (only to
/// know when to refresh, when the provider sent no `expires_in`).
fn jwt_exp(token: &str) -> Option<u64> {
    super::claims::unverified(token).ok()?.get("exp")?.as_u64()
}

/// Who an access token names (its `preferred_username`, else `sub`), read
/// without verifying it: for the person to see whose login they got.
/// Escaped (it is the provider's text).
pub fn holder_of(token: &str) -> Option<String> {
    let claims = super::claims::unverified(token).ok()?;
    ["preferred_username", "sub"]
        .iter()
        .find_map(|c| claims.get(*c)?.as_str().map(escaped_line))
}

/// Hands the URL to the desktop's opener, if there is one; the URL was
/// printed already, so failure here only means the person opens it.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_token_characters_are_kept() {
        assert!(is_b64token("eyJhbGciOi.eyJzdWIi.c2ln"));
        assert!(is_b64token("abc+/~-._=="));
        assert!(!is_b64token("abc\u{1b}]0;title\u{7}"));
        assert!(!is_b64token("abc\ndef"));
        assert!(!is_b64token("a b"));
        assert!(!is_b64token("=="));
    }

    #[test]
    fn the_expiry_of_a_jwt_is_read_without_verifying_it() {
        use base64::Engine;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!("{}.{}.sig", b64("{}"), b64("{\"exp\":1700000000}"));
        assert_eq!(jwt_exp(&token), Some(1_700_000_000));
        assert_eq!(jwt_exp("opaque"), None);
    }
}
