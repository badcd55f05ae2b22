//! A development OIDC issuer: serves a discovery document and a JWKS over
//! plain HTTP on loopback (or HTTPS with a certificate it is given), mints
//! tokens with throwaway keys, and sends back-channel logouts to the client
//! registered for them.
//!
//! It exists for the integration tests and for trying the service locally.
//! It is never started by the service's own configuration: only code that
//! calls [`DevIssuer::start`] runs it, and it binds only to loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::oidc::BACKCHANNEL_LOGOUT_EVENT;

/// The client id of the development issuer's tokens (`client_id`), the
/// client its back-channel logouts are addressed to by `dev`.
pub(crate) const CLIENT_ID: &str = "nats-oidc-callout-dev";

/// A signing key the issuer holds; published in the JWKS or not.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    published: bool,
}

struct Inner {
    issuer: String,
    keys: Mutex<Vec<SigningKey>>,
    available: AtomicBool,
    serve_kids: AtomicBool,
    /// Milliseconds every JWKS answer is held back (a slow issuer).
    jwks_delay_ms: AtomicU64,
    /// Published as-is beside the signing keys (keys of types the service
    /// does not use, as real issuers publish).
    extra_jwks: Mutex<Vec<Value>>,
    jwks_requests: AtomicU64,
    discovery_requests: AtomicU64,
    key_counter: AtomicU64,
    /// When set, discovery and the JWKS want this caller's token (as a
    /// Kubernetes API server does without anonymous discovery).
    required_bearer: Mutex<Option<String>>,
    /// The `jwks_uri` discovery names, when not the issuer's own.
    advertised_jwks: Mutex<Option<String>>,
    /// The client `POST /logout` sends back-channel logouts to.
    logout_client: Mutex<Option<LogoutClient>>,
}

/// A client registered for back-channel logouts: where its endpoint is,
/// and the `aud` its logout tokens carry (its client id).
#[derive(Clone)]
struct LogoutClient {
    uri: String,
    audience: String,
}

pub struct DevIssuer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

/// `dev-issuer`: runs the issuer on `127.0.0.1:port` until `shutdown`.
pub(crate) async fn run_standalone(
    port: u16,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let issuer = DevIssuer::start(port)
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    eprintln!(
        "DEVELOPMENT OIDC ISSUER at {iss} (throwaway keys; signs any token asked of it; never for production)\n\
         tokens: curl '{iss}/token?user=ana&roles=admin'\n\
         workload tokens for [[bindings]]: curl -d '{{\"preset\": \"github\", \"claims\": {{\"ref\": \"refs/heads/dev\"}}}}' '{iss}/token'\n\
         {presets}",
        iss = issuer.issuer(),
        presets = presets_help(&issuer.issuer())
    );
    shutdown.await;
    Ok(())
}

/// What `POST /token` takes, for the startup printouts: indented lines.
pub(crate) fn presets_help(iss: &str) -> String {
    format!(
        "  presets \"github\", \"kubernetes\", \"google\" (or none: only the claims given); \"claims\" sets\n  \
         top-level claims or JSON pointers (\"/kubernetes.io/namespace\"), null removes one; \"ttl\" in seconds.\n  \
         Each preset signs as the issuer {iss}/<preset>: an [[oidc]] block with that issuer\n  \
         and platform = \"<preset>\" trusts its tokens."
    )
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl DevIssuer {
    /// Starts on `127.0.0.1:port` (0 picks a free port) with one published
    /// RS256 key and one published ES256 key.
    pub async fn start(port: u16) -> std::io::Result<DevIssuer> {
        DevIssuer::start_with(port, None).await
    }

    /// Starts on `https://127.0.0.1:port` with the server certificate
    /// `cert` (which must name 127.0.0.1).
    pub async fn start_tls(port: u16, cert: &super::CertAndKey) -> std::io::Result<DevIssuer> {
        let acceptor = tls_acceptor(cert).map_err(std::io::Error::other)?;
        DevIssuer::start_with(port, Some(acceptor)).await
    }

    async fn start_with(
        port: u16,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<DevIssuer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let inner = Arc::new(Inner {
            issuer: format!("{scheme}://{addr}"),
            keys: Mutex::new(Vec::new()),
            available: AtomicBool::new(true),
            serve_kids: AtomicBool::new(true),
            jwks_delay_ms: AtomicU64::new(0),
            extra_jwks: Mutex::new(Vec::new()),
            jwks_requests: AtomicU64::new(0),
            discovery_requests: AtomicU64::new(0),
            key_counter: AtomicU64::new(0),
            required_bearer: Mutex::new(None),
            advertised_jwks: Mutex::new(None),
            logout_client: Mutex::new(None),
        });
        let issuer = DevIssuer {
            server: tokio::spawn(serve(listener, tls, inner.clone())),
            inner,
            addr,
        };
        issuer.add_key(Algorithm::RS256, true);
        issuer.add_key(Algorithm::ES256, true);
        Ok(issuer)
    }

    pub fn issuer(&self) -> String {
        self.inner.issuer.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates a new key (RS256 or ES256), published or not; returns its kid.
    pub fn add_key(&self, alg: Algorithm, published: bool) -> String {
        let n = self.inner.key_counter.fetch_add(1, Ordering::Relaxed);
        let kid = format!("{}-{n}", format!("{alg:?}").to_lowercase());
        let (encoding, jwk) = match alg {
            Algorithm::RS256 => rsa_key(&kid),
            Algorithm::ES256 => ec_key(&kid),
            other => panic!("the development issuer makes RS256 and ES256 keys, not {other:?}"),
        };
        self.inner.keys.lock().unwrap().push(SigningKey {
            kid: kid.clone(),
            alg,
            encoding,
            jwk,
            published,
        });
        kid
    }

    /// Replaces every published key of `alg` with a new one; returns its kid.
    pub fn rotate(&self, alg: Algorithm) -> String {
        for k in self
            .inner
            .keys
            .lock()
            .unwrap()
            .iter_mut()
            .filter(|k| k.alg == alg)
        {
            k.published = false;
        }
        self.add_key(alg, true)
    }

    /// The kid of the newest published key of `alg`.
    pub fn current_kid(&self, alg: Algorithm) -> String {
        self.inner
            .current_kid(alg)
            .expect("a published key of that algorithm")
    }

    /// While unavailable, every request is answered 503 (an outage).
    pub fn set_available(&self, up: bool) {
        self.inner.available.store(up, Ordering::SeqCst);
    }

    /// Whether the JWKS names its keys (some issuers publish keys without kid).
    pub fn set_serve_kids(&self, on: bool) {
        self.inner.serve_kids.store(on, Ordering::SeqCst);
    }

    /// Holds every JWKS answer back by `delay` (a slow issuer).
    pub fn set_jwks_delay(&self, delay: std::time::Duration) {
        self.inner
            .jwks_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Discovery and the JWKS answer 401 unless the request carries
    /// `Authorization: Bearer <token>` (None: anyone may read them).
    pub fn require_bearer(&self, token: Option<&str>) {
        *self.inner.required_bearer.lock().unwrap() = token.map(str::to_string);
    }

    /// Discovery names `url` as the `jwks_uri` (None: the issuer's own).
    pub fn advertise_jwks_at(&self, url: Option<&str>) {
        *self.inner.advertised_jwks.lock().unwrap() = url.map(str::to_string);
    }

    /// Publishes `jwk` as-is in the JWKS, beside the signing keys.
    pub fn publish_raw_jwk(&self, jwk: Value) {
        self.inner.extra_jwks.lock().unwrap().push(jwk);
    }

    pub fn jwks_requests(&self) -> u64 {
        self.inner.jwks_requests.load(Ordering::SeqCst)
    }

    pub fn discovery_requests(&self) -> u64 {
        self.inner.discovery_requests.load(Ordering::SeqCst)
    }

    /// The public JWK of a key, published or not.
    pub fn public_jwk(&self, kid: &str) -> Value {
        self.inner
            .keys
            .lock()
            .unwrap()
            .iter()
            .find(|k| k.kid == kid)
            .expect("known kid")
            .jwk
            .clone()
    }

    /// Signs `claims` with key `kid` and the given header (its `alg` is set
    /// from the key when left at the default, and `kid` when unset).
    pub fn sign_with_header(&self, kid: &str, mut header: Header, claims: &Value) -> String {
        let keys = self.inner.keys.lock().unwrap();
        let key = keys.iter().find(|k| k.kid == kid).expect("known kid");
        header.alg = key.alg;
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("dev key signs")
    }

    /// Signs `claims` as an RFC 9068 access token (`typ: at+jwt`) with key `kid`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(kid.to_string());
        self.sign_with_header(kid, header, claims)
    }

    /// Claims of a typical access token from this issuer.
    pub fn claims(&self, user: &str, audience: &str, roles: &[&str], ttl_secs: u64) -> Value {
        claims_for(&self.inner.issuer, user, audience, roles, ttl_secs)
    }

    /// A ready-to-use RS256 access token.
    pub fn token(&self, user: &str, audience: &str, roles: &[&str], ttl_secs: u64) -> String {
        let kid = self.current_kid(Algorithm::RS256);
        self.sign(&kid, &self.claims(user, audience, roles, ttl_secs))
    }

    /// An RS256 access token of a login session `sid` (the claim an OpenID
    /// Provider puts in the tokens of a session, which a back-channel
    /// logout of that session names).
    pub fn token_with_sid(
        &self,
        user: &str,
        audience: &str,
        roles: &[&str],
        ttl_secs: u64,
        sid: &str,
    ) -> String {
        let mut claims = self.claims(user, audience, roles, ttl_secs);
        claims["sid"] = sid.into();
        let kid = self.current_kid(Algorithm::RS256);
        self.sign(&kid, &claims)
    }

    /// Claims of a back-channel logout token (OpenID Connect Back-Channel
    /// Logout 1.0 §2.4) for `sub` and/or `sid`, addressed to `aud`: a
    /// fresh `jti`, the logout event, valid two minutes. `sub` is the
    /// subject as this issuer's access tokens carry it (`user-<name>`).
    pub fn logout_claims(&self, sub: Option<&str>, sid: Option<&str>, aud: &str) -> Value {
        logout_claims_for(&self.inner.issuer, sub, sid, aud)
    }

    /// Signs `claims` as a logout token: RS256, `typ` `logout+jwt`.
    pub fn sign_logout(&self, claims: &Value) -> String {
        self.inner
            .sign_logout(claims)
            .expect("a published RS256 key signs")
    }

    /// Registers the client `POST /logout` sends back-channel logouts to:
    /// its back-channel logout URI and the `aud` of its logout tokens (as
    /// a client registers with a provider).
    pub fn register_backchannel_logout(&self, uri: &str, audience: &str) {
        *self.inner.logout_client.lock().unwrap() = Some(LogoutClient {
            uri: uri.to_string(),
            audience: audience.to_string(),
        });
    }

    /// A ready-to-send back-channel logout token (see `logout_claims`).
    pub fn logout_token(&self, sub: Option<&str>, sid: Option<&str>, aud: &str) -> String {
        self.sign_logout(&self.logout_claims(sub, sid, aud))
    }
}

/// Claims shaped like a Keycloak access token: roles under
/// `realm_access.roles`, the login name in `preferred_username`.
fn claims_for(issuer: &str, user: &str, audience: &str, roles: &[&str], ttl_secs: u64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    json!({
        "iss": issuer,
        "sub": format!("user-{user}"),
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_secs,
        "preferred_username": user,
        "realm_access": { "roles": roles },
        "client_id": CLIENT_ID,
    })
}

/// Claims of a back-channel logout token of `issuer` (see
/// [`DevIssuer::logout_claims`]).
fn logout_claims_for(issuer: &str, sub: Option<&str>, sid: Option<&str>, aud: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut claims = json!({
        "iss": issuer,
        "aud": aud,
        "iat": now,
        "exp": now + 120,
        "jti": nuid::next().to_string(),
        "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
    });
    if let Some(sub) = sub {
        claims["sub"] = sub.into();
    }
    if let Some(sid) = sid {
        claims["sid"] = sid.into();
    }
    claims
}

impl Inner {
    /// The kid of the newest published key of `alg`, if any.
    fn current_kid(&self, alg: Algorithm) -> Option<String> {
        self.keys
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|k| k.alg == alg && k.published)
            .map(|k| k.kid.clone())
    }

    /// Signs `claims` with the newest published RS256 key and header `typ`
    /// (None: no such key).
    fn sign_rs256(&self, typ: &str, claims: &Value) -> Option<Result<String, String>> {
        let keys = self.keys.lock().unwrap();
        let key = keys
            .iter()
            .rev()
            .find(|k| k.alg == Algorithm::RS256 && k.published)?;
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some(typ.into());
        header.kid = Some(key.kid.clone());
        Some(jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| e.to_string()))
    }

    /// Signs `claims` as a logout token: RS256, `typ` `logout+jwt`.
    fn sign_logout(&self, claims: &Value) -> Option<String> {
        self.sign_rs256("logout+jwt", claims)?.ok()
    }
}

fn rsa_key(kid: &str) -> (EncodingKey, Value) {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .expect("RSA key generation");
    let der = pair.as_der().expect("PKCS#8 export");
    let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes())
        .expect("RSA PKCS#8 key");
    let public = pair.public_key();
    let jwk = json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
    });
    (encoding, jwk)
}

fn ec_key(kid: &str) -> (EncodingKey, Value) {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key generation");
    let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8 export");
    let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
    let point = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC",
        "use": "sig",
        "alg": "ES256",
        "crv": "P-256",
        "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    (encoding, jwk)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    inner: Arc<Inner>,
) {
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", get(mint).post(mint_claims))
        .route(
            "/{platform}/.well-known/openid-configuration",
            get(platform_discovery),
        )
        .route("/logout", post(logout))
        .with_state(inner);
    let served = match tls {
        Some(acceptor) => axum::serve(TlsListener { listener, acceptor }, app).await,
        None => axum::serve(listener, app).await,
    };
    if let Err(e) = served {
        tracing::error!("development issuer stopped: {e}");
    }
}

/// The TLS server side for `cert` (ring, as every TLS peer here).
fn tls_acceptor(cert: &super::CertAndKey) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&cert.0)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.0.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(&cert.1).map_err(|e| format!("{}: {e}", cert.1.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
    .map_err(|e| format!("the development issuer's certificate: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Connections that completed a TLS handshake; the others are dropped.
struct TlsListener {
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            // Bounded: a peer that never finishes its handshake must not
            // hold the listener (loopback only; the issuer is for trying).
            let handshake = self.acceptor.accept(tcp);
            match tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!("development issuer: TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("development issuer: TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// 401 unless the request carries the token the issuer wants, if any.
fn unauthorized(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let wanted = inner.required_bearer.lock().unwrap().clone()?;
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    (given != Some(wanted.as_str()))
        .then(|| (StatusCode::UNAUTHORIZED, "a bearer token is required").into_response())
}

fn outage() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "development issuer is switched off",
    )
        .into_response()
}

async fn discovery(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    discovery_of(&inner, &inner.issuer, &headers)
}

/// `GET /<platform>/.well-known/openid-configuration`: the discovery
/// document of the issuer that `POST /token` with that preset signs as
/// (`<issuer>/github`, ...): a platform's tokens come from an issuer of
/// their own, which a config names in an `[[oidc]]` block of its own.
async fn platform_discovery(
    State(inner): State<Arc<Inner>>,
    Path(platform): Path<String>,
    headers: HeaderMap,
) -> Response {
    if Preset::named(&platform).is_none() {
        return (StatusCode::NOT_FOUND, "no such issuer here\n").into_response();
    }
    discovery_of(&inner, &format!("{}/{platform}", inner.issuer), &headers)
}

/// The discovery document of `issuer`, one of this server's; its keys are
/// the server's JWKS.
fn discovery_of(inner: &Inner, issuer: &str, headers: &HeaderMap) -> Response {
    inner.discovery_requests.fetch_add(1, Ordering::SeqCst);
    if !inner.available.load(Ordering::SeqCst) {
        return outage();
    }
    if let Some(refused) = unauthorized(inner, headers) {
        return refused;
    }
    let jwks_uri = inner
        .advertised_jwks
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| format!("{}/jwks", inner.issuer));
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{}/authorize", inner.issuer),
        "token_endpoint": format!("{}/token", inner.issuer),
        "jwks_uri": jwks_uri,
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct MintQuery {
    user: String,
    #[serde(default)]
    roles: String,
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    ttl: Option<u64>,
    /// The login session the token belongs to (`sid` claim).
    #[serde(default)]
    sid: Option<String>,
}

/// `GET /token?user=ana&roles=admin,reader[&aud=nats][&ttl=3600][&sid=s1]`
/// mints an RS256 access token: the development issuer's stand-in for a
/// login, of session `sid` (a fresh one when not given).
async fn mint(State(inner): State<Arc<Inner>>, Query(q): Query<MintQuery>) -> Response {
    if !inner.available.load(Ordering::SeqCst) {
        return outage();
    }
    let roles: Vec<&str> = q
        .roles
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    let ttl = q.ttl.unwrap_or(3600).clamp(1, 24 * 3600);
    let mut claims = claims_for(
        &inner.issuer,
        &q.user,
        q.aud.as_deref().unwrap_or("nats"),
        &roles,
        ttl,
    );
    // Each login is a session of its own, which a logout can name.
    claims["sid"] = q.sid.unwrap_or_else(|| nuid::next().to_string()).into();
    match inner.sign_rs256("at+jwt", &claims) {
        None => (StatusCode::SERVICE_UNAVAILABLE, "no published RS256 key").into_response(),
        Some(Ok(token)) => token.into_response(),
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// The platforms `POST /token` mints tokens of: claims as each platform
/// documents its tokens, signed as it signs them (RS256, `typ: JWT`), as
/// an issuer of their own below this one (`<issuer>/github`, ...).
#[derive(Clone, Copy)]
enum Preset {
    GitHub,
    Kubernetes,
    Google,
}

impl Preset {
    const ALL: [Preset; 3] = [Preset::GitHub, Preset::Kubernetes, Preset::Google];

    fn name(self) -> &'static str {
        match self {
            Preset::GitHub => "github",
            Preset::Kubernetes => "kubernetes",
            Preset::Google => "google",
        }
    }

    fn named(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == name)
    }

    /// A token of this platform for a workload of the example company
    /// "acme", valid `ttl` seconds from `now`, issued by `issuer`.
    fn claims(self, issuer: &str, now: u64, ttl: u64) -> Value {
        let jti = nuid::next().to_string();
        match self {
            // A GitHub Actions job: the deploy workflow of acme/orders,
            // pushed to main.
            Preset::GitHub => json!({
                "iss": issuer,
                "aud": "nats",
                "sub": "repo:acme/orders:ref:refs/heads/main",
                "jti": jti,
                "iat": now,
                "nbf": now,
                "exp": now + ttl,
                "ref": "refs/heads/main",
                "ref_type": "branch",
                "sha": "5c1f0a3e9b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e",
                "repository": "acme/orders",
                "repository_id": "74",
                "repository_owner": "acme",
                "repository_owner_id": "65",
                "repository_visibility": "private",
                "actor": "octocat",
                "actor_id": "12",
                "event_name": "push",
                "workflow": "deploy",
                "workflow_ref": "acme/orders/.github/workflows/deploy.yml@refs/heads/main",
                "job_workflow_ref": "acme/orders/.github/workflows/deploy.yml@refs/heads/main",
                "run_id": "9200000001",
                "run_number": "42",
                "run_attempt": "1",
                "runner_environment": "github-hosted",
                "head_ref": "",
                "base_ref": "",
            }),
            // A projected service-account token of a pod of
            // orders/orders-reader, audience "nats".
            Preset::Kubernetes => json!({
                "iss": issuer,
                "aud": ["nats"],
                "sub": "system:serviceaccount:orders:orders-reader",
                "jti": jti,
                "iat": now,
                "nbf": now,
                "exp": now + ttl,
                "kubernetes.io": {
                    "namespace": "orders",
                    "serviceaccount": {"name": "orders-reader", "uid": "9f0c6a51-0000-4000-8000-00000000a001"},
                    "pod": {"name": "orders-reader-6b7f9c8d4-q2w3e", "uid": "9f0c6a51-0000-4000-8000-00000000a002"},
                    "node": {"name": "node-1", "uid": "9f0c6a51-0000-4000-8000-00000000a003"},
                },
            }),
            // A Google ID token of a service account, from the metadata
            // server with format=full.
            Preset::Google => json!({
                "iss": issuer,
                "aud": "nats",
                "azp": "104200000000000000001",
                "sub": "104200000000000000001",
                "email": "orders-exporter@acme-prod.iam.gserviceaccount.com",
                "email_verified": true,
                "iat": now,
                "exp": now + ttl,
                "google": {
                    "compute_engine": {
                        "project_id": "acme-prod",
                        "project_number": 123456789012u64,
                        "zone": "europe-west1-b",
                        "instance_id": "4200000000000000001",
                        "instance_name": "orders-exporter-1",
                        "instance_creation_timestamp": now - 86400,
                    }
                },
            }),
        }
    }
}

/// The body of `POST /token`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    /// "github", "kubernetes" or "google"; none: only `claims` (with
    /// `iss`, `iat`, `nbf`, `exp` and `aud` "nats" unless given).
    #[serde(default)]
    preset: Option<String>,
    /// Claims set over the preset's: a top-level name, or a JSON pointer
    /// (`/kubernetes.io/namespace`) into nested objects; null removes one.
    #[serde(default)]
    claims: serde_json::Map<String, Value>,
    /// Lifetime in seconds (default 3600, at most a day).
    #[serde(default)]
    ttl: Option<u64>,
}

/// `POST /token` with a JSON body `{"preset": "github", "claims": {...},
/// "ttl": 600}` mints a token with the claims asked for: a platform's
/// shape (GitHub Actions, Kubernetes service account, Google) as its own
/// issuer below this one signs it, changed by `claims`; or, without a
/// preset, a token of this issuer with exactly the claims given. For
/// trying `[[bindings]]` and `require_claims` locally.
async fn mint_claims(State(inner): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    if !inner.available.load(Ordering::SeqCst) {
        return outage();
    }
    match claims_asked(&inner.issuer, &body) {
        Err(problem) => (StatusCode::BAD_REQUEST, format!("{problem}\n")).into_response(),
        Ok((typ, claims)) => match inner.sign_rs256(typ, &claims) {
            None => (StatusCode::SERVICE_UNAVAILABLE, "no published RS256 key").into_response(),
            Some(Ok(token)) => token.into_response(),
            Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        },
    }
}

/// The header `typ` and the claims a `POST /token` body asks for.
fn claims_asked(issuer: &str, body: &[u8]) -> Result<(&'static str, Value), String> {
    const USAGE: &str =
        r#"send {"preset": "github"|"kubernetes"|"google", "claims": {...}, "ttl": <seconds>}"#;
    let asked: MintRequest = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a token request ({e}); {USAGE}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let ttl = asked.ttl.unwrap_or(3600).clamp(1, 24 * 3600);
    let (typ, mut claims) = match asked.preset.as_deref() {
        None => (
            "at+jwt",
            json!({"iss": issuer, "aud": "nats", "iat": now, "nbf": now, "exp": now + ttl}),
        ),
        Some(name) => {
            let preset = Preset::named(name).ok_or_else(|| {
                let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "preset {:?} is not one of {names:?}",
                    crate::text::clip(name)
                )
            })?;
            (
                "JWT",
                preset.claims(&format!("{issuer}/{}", preset.name()), now, ttl),
            )
        }
    };
    for (key, value) in asked.claims {
        set_claim(&mut claims, &key, value)?;
    }
    Ok((typ, claims))
}

/// Sets (or with null removes) the claim `key`: a top-level name, or a
/// JSON pointer into nested objects, made as needed.
fn set_claim(claims: &mut Value, key: &str, value: Value) -> Result<(), String> {
    let shown = || crate::text::name(key);
    let path: Vec<String> = match key.strip_prefix('/') {
        None => vec![key.to_string()],
        Some(pointer) => pointer
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    };
    if path.iter().any(String::is_empty) {
        return Err(format!("claim {:?}: an empty name", shown()));
    }
    let (last, parents) = path.split_last().expect("at least one name");
    let mut at = claims;
    for name in parents {
        let object = at.as_object_mut().ok_or_else(|| {
            format!(
                "claim {:?}: {name:?} is inside a value that is not an object",
                shown()
            )
        })?;
        at = object
            .entry(name.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    let object = at.as_object_mut().ok_or_else(|| {
        format!(
            "claim {:?}: its parent is not an object in the token",
            shown()
        )
    })?;
    if value.is_null() {
        object.remove(last);
    } else {
        object.insert(last.clone(), value);
    }
    Ok(())
}

/// `POST /logout` with `sub=...` and/or `sid=...` (form body or query):
/// the development issuer's stand-in for a user logging out. It signs a
/// back-channel logout token for them, POSTs it to the registered
/// client's back-channel logout URI, and answers with the client's status
/// and what it said. The token itself is shown nowhere.
async fn logout(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    if !inner.available.load(Ordering::SeqCst) {
        return outage();
    }
    let (mut sub, mut sid) = (None, None);
    let pairs = url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
        .chain(url::form_urlencoded::parse(&body));
    for (key, value) in pairs {
        match &*key {
            "sub" if !value.is_empty() => sub = Some(value.into_owned()),
            "sid" if !value.is_empty() => sid = Some(value.into_owned()),
            _ => {}
        }
    }
    if sub.is_none() && sid.is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "give sub=<subject> and/or sid=<session> (form or query)\n",
        )
            .into_response();
    }
    let Some(client) = inner.logout_client.lock().unwrap().clone() else {
        return (
            StatusCode::CONFLICT,
            "no client registered a back-channel logout URI with this issuer\n",
        )
            .into_response();
    };
    let claims = logout_claims_for(
        &inner.issuer,
        sub.as_deref(),
        sid.as_deref(),
        &client.audience,
    );
    let Some(token) = inner.sign_logout(&claims) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no published RS256 key\n").into_response();
    };
    let who = [("sub", &sub), ("sid", &sid)]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", crate::text::name(v))))
        .collect::<Vec<_>>()
        .join(" ");
    let sent = reqwest::Client::new()
        .post(&client.uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={token}"))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let status = answer.status();
            let said = answer.text().await.unwrap_or_default();
            let code = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let said = crate::text::reason(said.trim());
            let text = format!(
                "back-channel logout of {who} sent to {}: {status}{}{said}\n",
                client.uri,
                if said.is_empty() { "" } else { " " },
            );
            (code, text).into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!(
                "back-channel logout of {who} could not be sent to {}: {e}\n",
                client.uri
            ),
        )
            .into_response(),
    }
}

async fn jwks(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    inner.jwks_requests.fetch_add(1, Ordering::SeqCst);
    let delay = inner.jwks_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if !inner.available.load(Ordering::SeqCst) {
        return outage();
    }
    if let Some(refused) = unauthorized(&inner, &headers) {
        return refused;
    }
    let extra = inner.extra_jwks.lock().unwrap().clone();
    let keys: Vec<Value> = extra
        .into_iter()
        .chain(
            inner
                .keys
                .lock()
                .unwrap()
                .iter()
                .filter(|k| k.published)
                .map(|k| {
                    let mut jwk = k.jwk.clone();
                    if !inner.serve_kids.load(Ordering::SeqCst) {
                        jwk.as_object_mut().expect("JWK object").remove("kid");
                    }
                    jwk
                })
                .collect::<Vec<_>>(),
        )
        .collect();
    Json(json!({ "keys": keys })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(body: &str) -> Result<(&'static str, Value), String> {
        claims_asked("http://127.0.0.1:1", body.as_bytes())
    }

    #[test]
    fn a_preset_signs_as_its_platforms_issuer_with_the_claims_given() {
        let (typ, c) = asked(
            r#"{"preset": "kubernetes", "claims": {"sub": "system:serviceaccount:billing:api",
                "/kubernetes.io/namespace": "billing", "/kubernetes.io/pod": null, "/a~1b/c": 1}}"#,
        )
        .unwrap();
        assert_eq!(typ, "JWT");
        assert_eq!(c["iss"], "http://127.0.0.1:1/kubernetes");
        assert_eq!(c["sub"], "system:serviceaccount:billing:api");
        assert_eq!(c["kubernetes.io"]["namespace"], "billing");
        assert_eq!(
            c["kubernetes.io"]["serviceaccount"]["name"],
            "orders-reader"
        );
        assert!(c["kubernetes.io"].get("pod").is_none(), "null removes");
        assert_eq!(c["a/b"]["c"], 1, "pointers unescape ~1 and make objects");
        assert_eq!(
            c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
            3600
        );
    }

    #[test]
    fn without_a_preset_only_the_claims_given_and_the_registered_ones() {
        let (typ, c) = asked(r#"{"claims": {"sub": "x", "aud": ["a", "b"]}, "ttl": 60}"#).unwrap();
        assert_eq!(typ, "at+jwt");
        let mut names: Vec<&String> = c.as_object().unwrap().keys().collect();
        names.sort();
        assert_eq!(names, ["aud", "exp", "iat", "iss", "nbf", "sub"]);
        assert_eq!(c["iss"], "http://127.0.0.1:1");
        assert_eq!(c["aud"], json!(["a", "b"]));
        assert!(asked(r#"{"claims": {"": 1}}"#)
            .unwrap_err()
            .contains("an empty name"));
        assert!(asked(r#"{"claims": {"/exp/x/y": 1}}"#)
            .unwrap_err()
            .contains("\"x\" is inside a value that is not an object"));
    }
}
