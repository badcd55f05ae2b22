//! The client side against a real OpenID Provider: npm `oidc-provider`
//! (tests/provider/, installed with `npm ci` on first use) with the device
//! flow, PKCE, refresh tokens, client credentials, revocation and resource
//! indicators. Logins and consent are driven over HTTP as a browser would;
//! the tokens that `login`/`token` produce then connect to a real
//! nats-server through the callout.

mod common;

#[path = "../crates/nats-oidc-client/examples/token_client.rs"]
#[allow(dead_code)]
mod token_client;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::*;
use nats_oidc_client::TokenSource;

const RESOURCE: &str = "urn:nats";

/// tests/provider with its node_modules, installed once (`npm ci`).
fn provider_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/provider");
        let installed = dir.join("node_modules/oidc-provider/package.json");
        let version_ok = std::fs::read_to_string(&installed)
            .is_ok_and(|t| t.contains("\"version\": \"9.13.3\""));
        if !version_ok {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .expect("npm runs (Node.js 20+ is needed for the provider tests)");
            assert!(status.success(), "npm ci failed in {}", dir.display());
        }
        dir
    })
    .clone()
}

/// A running oidc-provider on a loopback port.
struct Provider {
    child: Child,
    port: u16,
    /// The CA of its certificate, when it serves HTTPS (`start_tls`).
    ca: Option<PathBuf>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Provider {
    fn start() -> Provider {
        Provider::start_with(&[])
    }

    /// Over HTTPS, with a certificate for 127.0.0.1 signed by `pki`'s CA.
    fn start_tls(pki: &Pki) -> Provider {
        let (cert, key) = pki.server(&["127.0.0.1"]);
        let mut provider =
            Provider::start_with(&["tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
        provider.ca = Some(pki.path("ca.pem"));
        provider
    }

    /// With provider.mjs's extra arguments (e.g. "no-revocation").
    fn start_with(extra: &[&str]) -> Provider {
        let dir = provider_dir();
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("provider.log");
        let port = free_port();
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .arg(port.to_string())
            .args(extra)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("node runs");
        let provider = Provider {
            child,
            port,
            ca: None,
            log,
            _dir: logs,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !provider.log_text().contains("listening ") {
            assert!(
                Instant::now() < deadline,
                "oidc-provider did not start:\n{}",
                provider.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        provider
    }

    fn issuer(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- oidc-provider log ----\n{}", self.log_text());
        }
    }
}

/// nats-server and the callout service, trusting the provider's tokens for
/// the resource urn:nats (roles from the "roles" claim) and, for the
/// tests' own observers, the development issuer's.
async fn stack_for(provider: &Provider) -> Stack {
    Stack::start(provider_options(provider)).await
}

fn provider_options(provider: &Provider) -> ServiceOptions {
    ServiceOptions {
        oidc: Some(format!(
            r#"[[oidc]]
name = "provider"
issuer = "{}"
audience = "{RESOURCE}"
roles_claim = "roles"
user_claim = "sub"
role_namespace = ""

[[oidc]]
name = "dev"
issuer = "{{dev_issuer}}"
audience = "{AUDIENCE}"
roles_claim = "realm_access.roles"
user_claim = "preferred_username"
role_namespace = ""
"#,
            provider.issuer()
        )),
        ..ServiceOptions::default()
    }
}

/// One person's machine: a home with XDG cache and config directories and
/// a client config file for `client_id` at the provider.
struct Home {
    dir: tempfile::TempDir,
}

/// The binary with `home` as its HOME, cache and config directories, and
/// none of the caller's client settings.
fn in_home(home: &Path, args: &[&str]) -> Command {
    let mut c = callout_bin();
    c.args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("NATS_OIDC_CALLOUT_") || k == "NATS_URL" {
            c.env_remove(k);
        }
    }
    c
}

impl Home {
    fn new(provider: &Provider, client_id: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config/nats-oidc-callout");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(
            config.join("client.toml"),
            format!(
                "[client]\nissuer = \"{}\"\nclient_id = \"{client_id}\"\nscopes = [\"openid\", \"offline_access\", \"nats\"]\nresource = \"{RESOURCE}\"\n",
                provider.issuer()
            ),
        )
        .unwrap();
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The command with this home's environment and nothing of the caller's.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = in_home(self.path(), args);
        c.env("RUST_LOG", "debug");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The one token cache file.
    fn cache_file(&self) -> Option<PathBuf> {
        let dir = self.path().join("cache/nats-oidc-callout/tokens");
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
    }

    fn cache(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.cache_file().unwrap()).unwrap()).unwrap()
    }
}

/// A login in progress: the `login` process, its stderr lines as they come.
struct Login {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Login {
    fn start(home: &Home, args: &[&str]) -> Login {
        Login::spawn(home.command(args))
    }

    fn spawn(mut command: Command) -> Login {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Login { child, lines }
    }

    /// Waits for a stderr line with `needle`, returns it.
    async fn line_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "login never said {needle:?}: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The user code of a device login.
    async fn user_code(&self) -> String {
        let line = self.line_with("enter the code ").await;
        line.rsplit(' ').next().unwrap().to_string()
    }

    /// Waits for the exit: (status code, stdout, stderr lines).
    async fn finish(mut self) -> (i32, String, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "login did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut stdout = String::new();
        use std::io::Read;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lines = self.lines.lock().unwrap().clone();
        (status.code().unwrap_or(-1), stdout, lines)
    }
}

/// A browser, as far as the provider's forms need one: cookies for the
/// provider's origin, redirects followed by hand, forms submitted.
struct Browser {
    http: reqwest::Client,
    origin: String,
    cookies: HashMap<String, String>,
}

struct Page {
    url: String,
    body: String,
}

impl Browser {
    fn new(provider: &Provider) -> Browser {
        let mut http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &provider.ca {
            let pem = std::fs::read(ca).unwrap();
            for cert in reqwest::Certificate::from_pem_bundle(&pem).unwrap() {
                http = http.add_root_certificate(cert);
            }
        }
        Browser {
            http: http.build().unwrap(),
            origin: provider.issuer(),
            cookies: HashMap::new(),
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        self.go(url.to_string(), None).await
    }

    async fn post(&mut self, url: &str, form: &[(String, String)]) -> Page {
        self.go(url.to_string(), Some(form.to_vec())).await
    }

    async fn go(&mut self, mut url: String, mut form: Option<Vec<(String, String)>>) -> Page {
        for _ in 0..20 {
            let mut request = match &form {
                Some(f) => self.http.post(&url).form(f),
                None => self.http.get(&url),
            };
            if url.starts_with(&self.origin) && !self.cookies.is_empty() {
                let jar: Vec<String> = self
                    .cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                request = request.header("cookie", jar.join("; "));
            }
            let response = request.send().await.unwrap();
            if url.starts_with(&self.origin) {
                for c in response.headers().get_all("set-cookie") {
                    let pair = c.to_str().unwrap().split(';').next().unwrap();
                    if let Some((k, v)) = pair.split_once('=') {
                        if v.is_empty() {
                            self.cookies.remove(k);
                        } else {
                            self.cookies.insert(k.to_string(), v.to_string());
                        }
                    }
                }
            }
            if response.status().is_redirection() {
                let location = response.headers()["location"].to_str().unwrap();
                url = reqwest::Url::parse(&url)
                    .unwrap()
                    .join(location)
                    .unwrap()
                    .to_string();
                form = None;
                continue;
            }
            let body = response.text().await.unwrap();
            return Page { url, body };
        }
        panic!("too many redirects");
    }

    /// Goes through the provider's pages from `start` as `login` and
    /// approves (or, with `deny`, aborts at the consent step).
    async fn approve(&mut self, start: &str, login: &str, deny: bool) -> Page {
        let mut page = self.get(start).await;
        for _ in 0..10 {
            let Some((action, mut fields)) = first_form(&page.body) else {
                return page;
            };
            let prompt = fields
                .iter()
                .find(|(k, _)| k == "prompt")
                .map(|(_, v)| v.clone());
            match prompt.as_deref() {
                Some("login") => {
                    fields.push(("login".into(), login.into()));
                    fields.push(("password".into(), "any".into()));
                }
                Some("consent") if deny => {
                    let abort = format!("{}/abort", page.url.split('?').next().unwrap());
                    return self.get(&abort).await;
                }
                _ => {}
            }
            page = self.post(&action, &fields).await;
        }
        panic!("the provider's pages did not end: {}", page.body);
    }
}

/// The action and hidden inputs of the first form of a page.
fn first_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = html.find("<form")?;
    let form = &html[start..];
    let form = &form[..form.find("</form>").unwrap_or(form.len())];
    let attr = |tag: &str, name: &str| {
        let key = format!("{name}=\"");
        let at = tag.find(&key)? + key.len();
        Some(tag[at..at + tag[at..].find('"')?].to_string())
    };
    let action = attr(&form[..form.find('>')?], "action")?;
    let mut fields = Vec::new();
    for input in form.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap_or(input.len())];
        if tag.contains("type=\"hidden\"") {
            if let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value")) {
                fields.push((n, v));
            }
        }
    }
    Some((action, fields))
}

/// Logs in with the device flow as `user`, approving it as a browser.
async fn device_login(provider: &Provider, home: &Home, user: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["login"];
    args.extend_from_slice(extra);
    let login = Login::start(home, &args);
    let code = login.user_code().await;
    let page = Browser::new(provider)
        .approve(
            &format!("{}/device?user_code={code}", provider.issuer()),
            user,
            false,
        )
        .await;
    assert!(page.body.contains("Sign-in Success"), "{}", page.body);
    let (status, stdout, lines) = login.finish().await;
    assert_eq!(status, 0, "login failed: {lines:?}");
    assert!(stdout.is_empty(), "login printed to stdout: {stdout}");
    lines
}

/// `token`: (exit code, stdout, stderr).
fn token(home: &Home, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let out = home.run(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Asserts the cache file is 0600 and holds only what the provider
/// returned (no ID token, device code, PKCE verifier or client secret).
fn assert_cache_is_private_and_minimal(home: &Home, secret: Option<&str>) {
    let path = home.cache_file().expect("a token cache file");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let cache = home.cache();
    let allowed = [
        "for",
        "access_token",
        "token_type",
        "obtained_at",
        "expires_at",
        "refresh_token",
        "scope",
    ];
    for key in cache.as_object().unwrap().keys() {
        assert!(allowed.contains(&key.as_str()), "the cache holds {key}");
    }
    if let Some(secret) = secret {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(secret), "the cache holds the client secret");
    }
}

fn assert_one_line_error(stderr: &str, needles: &[&str]) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or("");
    assert!(last.starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(last.contains(n), "{n:?} not in {last:?}");
    }
    assert!(!stderr.contains("eyJ"), "a token in the output: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_login_gives_tokens_that_connect_through_the_callout() {
    let provider = Provider::start();
    let stack = stack_for(&provider).await;
    let home = Home::new(&provider, "nats-cli");
    let lines = device_login(
        &provider,
        &home,
        "ana",
        &["--nats-context", "dev", "--nats-url", &stack.url()],
    )
    .await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Logged in to ") && l.contains(" as ana (client nats-cli)")),
        "login says whose login it got: {lines:?}"
    );
    assert!(!lines.join("\n").contains("eyJ"), "login printed a token");
    // The provider was polled at its interval: never told to slow down.
    assert!(!provider.log_text().contains("slow_down"));
    assert_cache_is_private_and_minimal(&home, None);
    let cache = home.cache();
    assert!(cache["refresh_token"].is_string());

    let (status, access_token, stderr) = token(&home, &[]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(access_token, cache["access_token"].as_str().unwrap());
    assert!(stderr.is_empty(), "token wrote to stderr: {stderr}");
    let claims = jwt_claims(&access_token).unwrap();
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["sub"], "ana");

    // The token logs in through the callout with ana's role (admin).
    let ana = connect(&stack.url(), &access_token)
        .await
        .expect("admitted");
    assert!(delivered(&ana.client, &ana.client, "anything.at.all").await);

    // The nats context: the CLI's own JSON, readable by its owner only.
    let context_path = home.path().join("config/nats/context/dev.json");
    let mode = std::fs::metadata(&context_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let context: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&context_path).unwrap()).unwrap();
    assert_eq!(context["url"], stack.url());
    assert_eq!(context["user"], "oidc");
    assert_eq!(context["password"], access_token.as_str());
    assert!(context["description"]
        .as_str()
        .unwrap()
        .contains("valid until"));
    // The token user's private inbox ({{inbox}}), where the CLI reads it,
    // and from `token --inbox-prefix` for other clients.
    let inbox = nats_oidc_client::inbox::of_token(&access_token).unwrap();
    assert_eq!(context["inbox_prefix"], inbox.as_str());
    let (status, printed, stderr) = token(&home, &["--inbox-prefix"]);
    assert_eq!((status, printed.trim()), (0, inbox.as_str()), "{stderr}");
    // What `nats --context dev` sends: the context's user and password.
    let by_context = connect_as_nats_cli(&context)
        .await
        .expect("the context's credentials are admitted");
    by_context.flush().await.unwrap();

    // `token --nats-context` refreshes it, keeping the other settings.
    let mut edited = context.clone();
    edited["jetstream_domain"] = "hub".into();
    edited["nkey"] = "/home/someone/user.nk".into();
    std::fs::write(&context_path, edited.to_string()).unwrap();
    let (status, stdout, stderr) = token(&home, &["--nats-context", "dev", "--min-valid", "1h"]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.is_empty(), "the token went to stdout too");
    let context: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&context_path).unwrap()).unwrap();
    assert_eq!(context["jetstream_domain"], "hub");
    assert!(
        context.get("nkey").is_none() && stderr.contains("removed nkey"),
        "a second kind of login is removed, and said: {stderr}"
    );
    assert_ne!(context["password"], access_token.as_str(), "refreshed");
    assert_eq!(context["password"], home.cache()["access_token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refreshes_near_expiry_and_a_revoked_refresh_token_is_a_clear_error() {
    let provider = Provider::start();
    let home = Home::new(&provider, "nats-cli");
    device_login(&provider, &home, "wes", &[]).await;
    let first = home.cache();

    // Fresh enough: the cached token, no request to the provider.
    let (status, t1, _) = token(&home, &[]);
    assert_eq!(status, 0);
    assert_eq!(t1, first["access_token"].as_str().unwrap());
    // Asked for more than is left: refreshed, and the rotated refresh
    // token replaces the old one in the cache.
    let (status, t2, stderr) = token(&home, &["--min-valid", "1h"]);
    assert_eq!(status, 0, "{stderr}");
    assert_ne!(t1, t2);
    let second = home.cache();
    assert_eq!(second["access_token"], t2.as_str());
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(jwt_claims(&t2).unwrap()["aud"], RESOURCE);
    assert!(provider.log_text().contains("grant.success refresh_token"));
    assert_cache_is_private_and_minimal(&home, None);

    // Revoked at the provider (RFC 7009), as an administrator would.
    let revoked = reqwest::Client::new()
        .post(format!("{}/token/revocation", provider.issuer()))
        .form(&[
            ("token", second["refresh_token"].as_str().unwrap()),
            ("token_type_hint", "refresh_token"),
            ("client_id", "nats-cli"),
        ])
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    let (status, stdout, stderr) = token(&home, &["--min-valid", "1h"]);
    assert_eq!(status, 1);
    assert!(stdout.is_empty());
    assert_one_line_error(
        &stderr,
        &[
            "refused the refresh: invalid_grant",
            "run `nats-oidc-callout login` again",
        ],
    );
    assert!(home.cache_file().is_none(), "the dead login is forgotten");
    let (status, _, stderr) = token(&home, &[]);
    assert_eq!(status, 1);
    assert_one_line_error(&stderr, &["not logged in as client nats-cli"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_login_uses_pkce_and_a_loopback_redirect() {
    let provider = Provider::start();
    let stack = stack_for(&provider).await;
    let home = Home::new(&provider, "nats-cli");
    let login = Login::start(&home, &["login", "--browser", "--no-open"]);
    let url = login.line_with("/auth?").await.trim().to_string();
    let parsed = reqwest::Url::parse(&url).unwrap();
    let query: HashMap<_, _> = parsed.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["resource"], RESOURCE);
    assert!(query["redirect_uri"].starts_with("http://127.0.0.1:"));
    assert!(query["redirect_uri"].ends_with("/callback"));
    // Connections that say nothing delay no other: a request after 40 of
    // them is answered while the newest are still open (one at a time, it
    // would wait out each one's read deadline), and beyond 32 the oldest
    // are closed to make room.
    let port = reqwest::Url::parse(&query["redirect_uri"])
        .unwrap()
        .port()
        .unwrap();
    let silent: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let stale = reqwest::get(format!(
        "http://127.0.0.1:{port}/callback?state=stale&code=x"
    ))
    .await
    .unwrap();
    assert_eq!(stale.status(), 400, "another login's answer is refused");
    let closed = |s: &std::net::TcpStream| {
        s.set_nonblocking(true).unwrap();
        match s.peek(&mut [0u8; 1]) {
            Ok(0) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            other => panic!("a silent connection: {other:?}"),
        }
    };
    assert!(
        !closed(&silent[39]),
        "the newest silent connection was closed before a later request was answered"
    );
    // The listener aborts the oldest connection's task; the socket closes
    // when the runtime drops it, which on a busy machine may come after the
    // answer above: wait for the close, not for a time.
    let closes = |s: &std::net::TcpStream| {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        matches!(s.peek(&mut [0u8; 1]), Ok(0))
    };
    assert!(closes(&silent[0]), "the oldest was not closed to make room");
    let page = Browser::new(&provider).approve(&url, "ana", false).await;
    assert!(page.url.starts_with("http://127.0.0.1:"), "{}", page.url);
    assert!(page.body.contains("Logged in to NATS"), "{}", page.body);
    let (status, _, lines) = login.finish().await;
    assert_eq!(status, 0, "{lines:?}");
    assert_cache_is_private_and_minimal(&home, None);
    let (status, access_token, _) = token(&home, &[]);
    assert_eq!(status, 0);
    let ana = connect(&stack.url(), &access_token)
        .await
        .expect("admitted");
    ana.client.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_wrong_client_and_expired_codes_are_clear_errors() {
    let provider = Provider::start();

    // Denied at the consent page: device flow...
    let home = Home::new(&provider, "nats-cli");
    let login = Login::start(&home, &["login"]);
    let code = login.user_code().await;
    Browser::new(&provider)
        .approve(
            &format!("{}/device?user_code={code}", provider.issuer()),
            "ana",
            true,
        )
        .await;
    let (status, _, lines) = login.finish().await;
    assert_eq!(status, 1);
    assert_one_line_error(
        &lines.join("\n"),
        &[
            "refused the device login: access_denied",
            "the login was denied",
        ],
    );
    assert!(home.cache_file().is_none());

    // ...and browser.
    let login = Login::start(&home, &["login", "--browser", "--no-open"]);
    let url = login.line_with("/auth?").await.trim().to_string();
    let page = Browser::new(&provider).approve(&url, "ana", true).await;
    assert!(page.body.contains("not completed"), "{}", page.body);
    let (status, _, lines) = login.finish().await;
    assert_eq!(status, 1);
    assert_one_line_error(
        &lines.join("\n"),
        &["the login was refused by the provider: access_denied"],
    );
    assert!(home.cache_file().is_none());

    // A client id the provider does not know.
    let wrong = Home::new(&provider, "nats-typo");
    let out = wrong.run(&["login"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(
        &String::from_utf8_lossy(&out.stderr),
        &["invalid_client", "check the client id \"nats-typo\""],
    );

    // A device code nobody approves before it expires (3 s for nats-stale).
    let stale = Home::new(&provider, "nats-stale");
    let started = Instant::now();
    let login = Login::start(&stale, &["login"]);
    login.user_code().await;
    let (status, _, lines) = login.finish().await;
    assert_eq!(status, 1);
    assert_one_line_error(
        &lines.join("\n"),
        &[
            "expired_token",
            "the code expired before the login was approved",
        ],
    );
    // The code lives 3 s and polls come every 5 s: a hang guard only.
    assert!(started.elapsed() < Duration::from_secs(60));

    // Settings missing: a usage error (exit status 2) saying where to put them.
    let empty = tempfile::tempdir().unwrap();
    let out = callout_bin()
        .args(["token", "--client-id", "x"])
        .env("HOME", empty.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("NATS_OIDC_CALLOUT_ISSUER")
        .env_remove("NATS_OIDC_CALLOUT_CLIENT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_error(
        &String::from_utf8_lossy(&out.stderr),
        &["no issuer: --issuer"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_give_machines_tokens() {
    let provider = Provider::start();
    let stack = stack_for(&provider).await;
    let home = Home::new(&provider, "nats-machine");
    let secret = home.path().join("secret");
    std::fs::write(&secret, "machine-secret\n").unwrap();
    let secret_arg = secret.to_str().unwrap();

    // No secret: a usage error.
    let (status, _, stderr) = token(&home, &["--client-credentials"]);
    assert_eq!(status, 2);
    assert_one_line_error(&stderr, &["client credentials need a client secret"]);

    let (status, t1, stderr) = token(
        &home,
        &["--client-credentials", "--client-secret-file", secret_arg],
    );
    assert_eq!(status, 0, "{stderr}");
    let claims = jwt_claims(&t1).unwrap();
    assert_eq!(claims["sub"], "nats-machine");
    assert_eq!(claims["aud"], RESOURCE);
    assert_cache_is_private_and_minimal(&home, Some("machine-secret"));
    // Cached until near expiry.
    let (_, t2, _) = token(
        &home,
        &["--client-credentials", "--client-secret-file", secret_arg],
    );
    assert_eq!(t1, t2);
    // The writer role: may publish orders, not the audit subject.
    let machine = connect(&stack.url(), &t1).await.expect("admitted");
    let reader = connect(&stack.url(), &stack.token("root", &["admin"]))
        .await
        .unwrap();
    assert!(delivered(&machine.client, &reader.client, "orders.new").await);
    assert!(not_delivered(&machine.client, &reader.client, "orders.audit").await);

    // A wrong secret.
    std::fs::write(&secret, "wrong").unwrap();
    let out = home
        .command(&["token", "--client-credentials", "--min-valid", "1h"])
        .env("NATS_OIDC_CALLOUT_CLIENT_SECRET_FILE", &secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(
        &String::from_utf8_lossy(&out.stderr),
        &["invalid_client", "(and its secret)"],
    );
}

/// Waits until `events` shows a disconnect followed by a connect.
async fn reconnected(events: &Mutex<Vec<String>>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let seen = events.lock().unwrap().clone();
        if let Some(d) = seen.iter().position(|e| e.contains("disconnected")) {
            if seen[d..].iter().any(|e| e == "connected") {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Client-credentials settings of the provider's machine client with 6 s
/// tokens, as a program would resolve them (no scopes).
fn machine_short_settings(provider: &Provider) -> nats_oidc_client::Settings {
    let mut settings = nats_oidc_client::Settings::resolve(nats_oidc_client::SettingsInput {
        issuer: Some(provider.issuer()),
        client_id: Some("nats-machine-short".into()),
        client_secret: Some("machine-secret".into()),
        resource: Some(RESOURCE.into()),
        config: Some(PathBuf::from("/dev/null")),
        ..Default::default()
    })
    .unwrap();
    settings.scopes.clear();
    settings
}

async fn example_client(
    url: &str,
    source: TokenSource,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let client = token_client::options(Arc::new(source), None)
        .await
        .event_callback(move |e| {
            sink.lock().unwrap().push(e.to_string());
            async {}
        })
        .connect(url)
        .await
        .unwrap();
    (client, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_client_reconnects_with_a_fresh_token_after_expiry() {
    let provider = Provider::start();
    let stack = stack_for(&provider).await;

    // A person's program: a sidecar keeps a token file fresh with `token`
    // (6 s tokens, refreshed when less than half is left).
    let home = Arc::new(Home::new(&provider, "nats-short"));
    device_login(&provider, &home, "ana", &[]).await;
    let token_file = home.path().join("nats-token");
    let write_token = {
        let token_file = token_file.clone();
        move |home: &Home| {
            let (status, t, stderr) = token(home, &[]);
            assert_eq!(status, 0, "{stderr}");
            std::fs::write(token_file.with_extension("new"), t).unwrap();
            std::fs::rename(token_file.with_extension("new"), &token_file).unwrap();
        }
    };
    write_token(&home);
    let first_token = std::fs::read_to_string(&token_file).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sidecar = {
        let stop = stop.clone();
        let home = home.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                write_token(&home);
                std::thread::sleep(Duration::from_millis(700));
            }
        })
    };
    let (by_file, file_events) = example_client(&stack.url(), TokenSource::file(&token_file)).await;

    // A machine: client credentials in the program itself (6 s tokens).
    let settings = machine_short_settings(&provider);
    let (by_cc, cc_events) = example_client(
        &stack.url(),
        TokenSource::client_credentials(settings, 60).unwrap(),
    )
    .await;

    // Both tokens expire after 6 s: nats-server disconnects each client,
    // which reconnects with the token its source has now.
    let (a, b) = tokio::join!(
        reconnected(&file_events, Duration::from_secs(20)),
        reconnected(&cc_events, Duration::from_secs(20))
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sidecar.join().unwrap();
    assert!(
        a,
        "the file client did not reconnect: {:?}",
        file_events.lock().unwrap()
    );
    assert!(
        b,
        "the client-credentials client did not reconnect: {:?}",
        cc_events.lock().unwrap()
    );
    let now_token = std::fs::read_to_string(&token_file).unwrap();
    assert_ne!(first_token, now_token, "the sidecar refreshed the file");
    // Both work after the reconnect.
    let reader = connect(&stack.url(), &stack.token("root", &["admin"]))
        .await
        .unwrap();
    assert!(delivered(&by_file, &reader.client, "orders.file").await);
    assert!(delivered(&by_cc, &reader.client, "orders.cc").await);
    // The service saw each identity log in at least twice.
    let log = stack.service.log_text();
    let admissions = |user: &str| {
        log.lines()
            .filter(|l| l.contains("allowed") && l.contains(&format!("user={user}")))
            .count()
    };
    assert!(admissions("ana") >= 2, "{log}");
    assert!(admissions("nats-machine-short") >= 2, "{log}");
}

/// A provider on loopback that answers the device flow with text meant for
/// a terminal (escape sequences that clear the screen and set its title)
/// and a polling interval of 0: `login` prints the text escaped, polls no
/// faster than every 5 s (RFC 8628), and names the provider's error code
/// escaped too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_provider_cannot_paint_the_terminal_or_make_login_poll_in_a_loop() {
    use axum::routing::{get, post};
    let polls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let metadata = serde_json::json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "device_authorization_endpoint": format!("{base}/device"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let device = serde_json::json!({
        "device_code": "dc",
        "user_code": "WDJB\u{1b}[2J\u{1b}]0;owned\u{7}",
        "verification_uri": format!("{base}/verify\u{1b}[31m"),
        "verification_uri_complete": format!("{base}/verify?c=1\u{202e}"),
        "expires_in": 60,
        "interval": 0,
    });
    let seen = polls.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(metadata) }),
        )
        .route(
            "/jwks",
            get(|| async { axum::Json(serde_json::json!({"keys": []})) }),
        )
        .route("/device", post(move || async move { axum::Json(device) }))
        .route(
            "/token",
            post(move || {
                let seen = seen.clone();
                async move {
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(Instant::now());
                        seen.len()
                    };
                    let error = if n < 2 {
                        "authorization_pending"
                    } else {
                        "access_denied\u{1b}[2J"
                    };
                    (
                        axum::http::StatusCode::BAD_REQUEST,
                        axum::Json(serde_json::json!({ "error": error })),
                    )
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let home = tempfile::tempdir().unwrap();
    let mut login = in_home(
        home.path(),
        &["login", "--issuer", &base, "--client-id", "nats-cli"],
    );
    let out = tokio::task::spawn_blocking(move || login.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for raw in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(
            !stderr.contains(raw) && !String::from_utf8_lossy(&out.stdout).contains(raw),
            "{raw:?} reached the terminal: {stderr:?}"
        );
    }
    for shown in [
        "WDJB\\u{1b}[2J\\u{1b}]0;owned\\u{7}",
        "/verify\\u{1b}[31m",
        "/verify?c=1\\u{202e}",
        "access_denied\\u{1b}[2J",
    ] {
        assert!(stderr.contains(shown), "{shown:?} not in {stderr:?}");
    }
    // Two polls, at least RFC 8628's 5 s apart (a busy machine only
    // makes the gap longer).
    let polls = polls.lock().unwrap().clone();
    assert_eq!(polls.len(), 2, "{stderr}");
    assert!(
        polls[1] - polls[0] >= Duration::from_millis(4900),
        "polled again after {:?}",
        polls[1] - polls[0]
    );
}

/// Secrets go only through directories this user alone controls (issue
/// 24, item 1): a token directory opened to everyone is made private
/// again, one that is a symlink or belongs to someone else is refused with
/// what to fix, and nothing is read from or written into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_cache_is_used_only_through_directories_of_this_user() {
    let provider = Provider::start();
    let home = Home::new(&provider, "nats-cli");
    device_login(&provider, &home, "pia", &[]).await;
    let tokens = home.cache_file().unwrap().parent().unwrap().to_path_buf();
    let app = tokens.parent().unwrap().to_path_buf();

    // Opened to everyone (by hand, or an old tool): repaired, then used.
    for d in [&app, &tokens] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let (status, _, stderr) = token(&home, &[]);
    assert_eq!(status, 0, "{stderr}");
    for d in [&app, &tokens] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }

    // A symlink to a directory someone else may write: refused, not read.
    let planted = tempfile::tempdir().unwrap();
    std::fs::set_permissions(planted.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for entry in std::fs::read_dir(&tokens).unwrap() {
        std::fs::copy(
            entry.as_ref().unwrap().path(),
            planted.path().join(entry.unwrap().file_name()),
        )
        .unwrap();
    }
    std::fs::rename(&tokens, tokens.with_extension("moved")).unwrap();
    std::os::unix::fs::symlink(planted.path(), &tokens).unwrap();
    let (status, stdout, stderr) = token(&home, &[]);
    assert_eq!(status, 1, "{stderr}");
    assert!(stdout.is_empty(), "a token came out of a planted cache");
    assert!(stderr.contains("is a symlink"), "{stderr}");
    assert!(stderr.contains(&tokens.display().to_string()), "{stderr}");
    std::fs::remove_file(&tokens).unwrap();
    std::fs::rename(tokens.with_extension("moved"), &tokens).unwrap();

    // Someone else's directory (only root can make one here).
    if unsafe_is_root() {
        let status = Command::new("chown")
            .args(["65534"])
            .arg(&tokens)
            .status()
            .unwrap();
        assert!(status.success());
        let (status, stdout, stderr) = token(&home, &[]);
        assert_eq!(status, 1, "{stderr}");
        assert!(stdout.is_empty());
        assert!(
            stderr.contains("is owned by uid 65534, not by you"),
            "{stderr}"
        );
    } else {
        println!("NOTICE: not root: the someone-else's-directory case needs chown; skipped");
    }
}

/// Whether the tests run as root (they can then chown).
fn unsafe_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A home whose client config also names the client secret (confidential
/// clients: a person's login and a machine's client credentials).
fn home_with_secret(provider: &Provider, client_id: &str, secret: &str) -> Home {
    let home = Home::new(provider, client_id);
    let config = home.path().join("config/nats-oidc-callout");
    std::fs::write(config.join("secret"), secret).unwrap();
    std::fs::set_permissions(
        config.join("secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(config.join("client.toml")).unwrap();
    text.push_str("client_secret_file = \"secret\"\n");
    std::fs::write(config.join("client.toml"), text).unwrap();
    home
}

fn subject_of(token: &str) -> String {
    jwt_claims(token).unwrap()["sub"]
        .as_str()
        .unwrap()
        .to_string()
}

/// One client id used for a person's login and for a machine's client
/// credentials: each gets its own token, and a token asked for with other
/// scopes finds no cached login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_serves_only_the_grant_and_settings_that_obtained_it() {
    let provider = Provider::start();
    let home = home_with_secret(&provider, "nats-both", "both-secret");
    device_login(&provider, &home, "ana", &[]).await;
    let (status, person, stderr) = token(&home, &[]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(subject_of(&person), "ana");

    let (status, machine, stderr) = token(&home, &["--client-credentials"]);
    assert_eq!(status, 0, "{stderr}");
    assert_ne!(machine, person, "the person's token answered the machine");
    assert_eq!(subject_of(&machine), "nats-both");
    assert!(
        provider
            .log_text()
            .contains("grant.success client_credentials"),
        "the machine's token came from the provider"
    );

    let (status, again, stderr) = token(&home, &[]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(again, person, "the machine's token answered the person");
    let (status, machine_again, _) = token(&home, &["--client-credentials"]);
    assert_eq!(status, 0);
    assert_eq!(machine_again, machine, "the machine's own token is cached");

    // Other scopes (or another resource): no cached login, said plainly.
    let (status, stdout, stderr) = token(&home, &["--scopes", "openid nats"]);
    assert_eq!(status, 1, "{stdout}");
    assert!(stdout.is_empty());
    assert_one_line_error(
        &stderr,
        &["no token for client nats-both", "other settings"],
    );
    let (status, _, stderr) = token(&home, &["--resource", "urn:other"]);
    assert_eq!(status, 1);
    assert_one_line_error(&stderr, &["resource urn:other", "other settings"]);
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `logout` revokes the refresh token at the provider, deletes the cache
/// and takes the token out of the nats context it wrote; it changes no
/// context it did not write, and a provider it cannot reach leaves
/// everything in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_deletes_and_empties_the_context() {
    let provider = Provider::start();
    let home = Home::new(&provider, "nats-cli");
    device_login(
        &provider,
        &home,
        "ana",
        &[
            "--nats-context",
            "dev",
            "--nats-url",
            "nats://127.0.0.1:4222",
        ],
    )
    .await;
    let cache_file = home.cache_file().unwrap();
    let saved = std::fs::read(&cache_file).unwrap();
    let context_path = home.path().join("config/nats/context/dev.json");
    std::fs::write(
        home.path().join("config/nats/context/other.json"),
        r#"{"url": "nats://x:4222", "user": "bob", "password": "p"}"#,
    )
    .unwrap();

    // A context this client did not write is refused, before anything else.
    let out = home.run(&["logout", "--nats-context", "other"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(
        &String::from_utf8_lossy(&out.stderr),
        &["not written by nats-oidc-callout", "not changed"],
    );
    let other = read_json(&home.path().join("config/nats/context/other.json"));
    assert_eq!(other["password"], "p", "not changed");
    assert!(cache_file.exists(), "nothing was done");

    let out = home.run(&["logout"]);
    let out_err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{out_err}");
    assert!(!cache_file.exists(), "the cache is gone");
    assert!(
        out_err.contains("The refresh token was revoked at"),
        "{out_err}"
    );

    // The refresh token is dead at the provider: put the old cache back
    // and ask for a refresh.
    std::fs::write(&cache_file, &saved).unwrap();
    std::fs::set_permissions(&cache_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (status, _, stderr) = token(&home, &["--min-valid", "1h"]);
    assert_eq!(status, 1);
    assert_one_line_error(&stderr, &["invalid_grant", "no longer accepted"]);

    // The context: the token goes, the rest stays.
    device_login(&provider, &home, "ana", &["--nats-context", "dev"]).await;
    assert!(read_json(&context_path)["password"].is_string());
    let out = home.run(&["logout", "--nats-context", "dev"]);
    assert_eq!(out.status.code(), Some(0));
    let context = read_json(&context_path);
    assert!(context.get("password").is_none(), "{context}");
    assert!(context.get("user").is_none(), "{context}");
    assert!(context.get("token").is_none(), "{context}");
    assert_eq!(context["url"], "nats://127.0.0.1:4222");
    assert!(context["description"]
        .as_str()
        .unwrap()
        .contains("logged out"));
    let out = home.run(&["logout"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No cached tokens"));

    // A provider that cannot be reached: nothing is deleted, and
    // --local-only forgets the tokens here.
    device_login(&provider, &home, "ana", &[]).await;
    drop(provider);
    let out = home.run(&["logout"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(
        &String::from_utf8_lossy(&out.stderr),
        &["nothing was deleted", "--local-only"],
    );
    assert!(home.cache_file().is_some());
    let out = home.run(&["logout", "--local-only"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(home.cache_file().is_none());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not revoked"));
}

/// A provider without a revocation endpoint: the tokens are deleted here
/// and the user is told the refresh token still works at the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_says_when_the_provider_cannot_revoke() {
    let provider = Provider::start_with(&["no-revocation"]);
    let home = Home::new(&provider, "nats-cli");
    device_login(&provider, &home, "ana", &[]).await;
    let out = home.run(&["logout"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("publishes no revocation_endpoint"),
        "{stderr}"
    );
    assert!(stderr.contains("accepts it until it expires"), "{stderr}");
    assert!(home.cache_file().is_none());
}

/// Operator mode: a context written with --nats-creds logs in as the nats
/// CLI reads it (creds plus token), `token --nats-context` keeps the creds,
/// and the example program presents the sentinel at every reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_mode_contexts_and_programs_present_the_sentinel() {
    let provider = Provider::start();
    let stack = Stack::start_operator(provider_options(&provider)).await;
    let sentinel = sentinel_for(&stack.url()).expect("an operator stack has a sentinel");
    let home = Home::new(&provider, "nats-cli");
    device_login(
        &provider,
        &home,
        "ana",
        &[
            "--nats-context",
            "op",
            "--nats-url",
            &stack.url(),
            "--nats-creds",
            sentinel.to_str().unwrap(),
        ],
    )
    .await;
    let context_path = home.path().join("config/nats/context/op.json");
    let context = read_json(&context_path);
    assert_eq!(context["creds"], sentinel.to_str().unwrap());
    assert_eq!(context["token"], home.cache()["access_token"]);
    assert!(context.get("user").is_none(), "{context}");
    assert!(context.get("password").is_none(), "{context}");

    let observer = connect(&stack.url(), &stack.token("root", &["admin"]))
        .await
        .unwrap();
    let cli = connect_as_nats_cli(&context)
        .await
        .expect("the operator-mode context is admitted");
    assert!(delivered(&cli, &observer.client, "orders.op").await);

    // The server-mode shape beside creds: the CLI drops the creds for the
    // user and password, and an operator-mode server refuses that.
    let mut both = context.clone();
    both["user"] = "oidc".into();
    both["password"] = both["token"].clone();
    both.as_object_mut().unwrap().remove("token");
    assert!(connect_as_nats_cli(&both).await.is_err());

    // Renewing keeps the creds.
    let (status, _, stderr) = token(&home, &["--nats-context", "op", "--min-valid", "1h"]);
    assert_eq!(status, 0, "{stderr}");
    let renewed = read_json(&context_path);
    assert_eq!(renewed["creds"], context["creds"]);
    assert_ne!(renewed["token"], context["token"]);
    assert!(renewed.get("password").is_none());
    connect_as_nats_cli(&renewed)
        .await
        .expect("the renewed context is admitted");

    // The example program with the sentinel: 6 s client-credentials tokens,
    // a reconnect after each expiry.
    let settings = machine_short_settings(&provider);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let program = token_client::options(
        Arc::new(TokenSource::client_credentials(settings, 60).unwrap()),
        Some(Arc::new(
            token_client::Sentinel::from_file(&sentinel).unwrap(),
        )),
    )
    .await
    .event_callback(move |e| {
        sink.lock().unwrap().push(e.to_string());
        async {}
    })
    .connect(stack.url())
    .await
    .expect("the example program is admitted in operator mode");
    assert!(
        reconnected(&events, Duration::from_secs(20)).await,
        "{:?}",
        events.lock().unwrap()
    );
    assert!(delivered(&program, &observer.client, "orders.program").await);
}

/// `login --browser` opens the browser at a one-time local address that
/// redirects to the provider: the state and the PKCE challenge never show
/// in the opener's command line (which every local user can read in
/// /proc), and a second visit of that address gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_is_opened_without_the_login_secrets_in_its_command_line() {
    let provider = Provider::start();
    let home = Home::new(&provider, "nats-cli");
    // An opener that records its arguments.
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let argv = home.path().join("opener-argv");
    std::fs::write(
        bin.join("xdg-open"),
        format!(
            "#!/bin/sh\nprintf '%s' \"$*\" > {}.new && mv {0}.new {0}\n",
            argv.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("xdg-open"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = home.command(&["login", "--browser"]);
    command.env("PATH", path);
    let login = Login::spawn(command);
    let url = login.line_with("/auth?").await.trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !argv.exists() {
        assert!(Instant::now() < deadline, "the opener never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = std::fs::read_to_string(&argv).unwrap();
    assert!(opened.starts_with("http://127.0.0.1:"), "{opened}");
    for secret in ["state", "code_challenge", "nonce", "client_id"] {
        assert!(
            !opened.contains(secret),
            "{secret} in the opener's argv: {opened}"
        );
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let first = http.get(&opened).send().await.unwrap();
    assert_eq!(first.status(), 302);
    assert_eq!(first.headers()["location"].to_str().unwrap(), url);
    let second = http.get(&opened).send().await.unwrap();
    assert_eq!(second.status(), 404, "the start address is used once");
    let page = Browser::new(&provider).approve(&url, "ana", false).await;
    assert!(page.body.contains("Logged in to NATS"), "{}", page.body);
    let (status, _, lines) = login.finish().await;
    assert_eq!(status, 0, "{lines:?}");
}

/// Names `ca` as the `ca_file` of `home`'s `[client]`: a copy next to the
/// client config, relative to it.
fn trust_in_config(home: &Home, ca: &Path) {
    let config = home.path().join("config/nats-oidc-callout");
    std::fs::copy(ca, config.join("ca.pem")).unwrap();
    let mut text = std::fs::read_to_string(config.join("client.toml")).unwrap();
    text.push_str("ca_file = \"ca.pem\"\n");
    std::fs::write(config.join("client.toml"), text).unwrap();
}

/// A provider whose certificate comes from a private CA: not trusted by
/// default (the error says what to set), trusted through `ca_file`, and a
/// wrong `ca_file` is named with the reason before the provider is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_through_ca_file_and_only_its_cas() {
    let pki = Pki::new("provider");
    let provider = Provider::start_tls(&pki);
    let home = home_with_secret(&provider, "nats-machine", "machine-secret");

    let (status, _, stderr) = token(&home, &["--client-credentials"]);
    assert_eq!(status, 1, "{stderr}");
    assert_one_line_error(
        &stderr,
        &[
            "UnknownIssuer",
            "signed by no CA of the built-in roots",
            "set ca_file in [client] (or --ca-file)",
        ],
    );

    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    let (expired, _) = pki.client("expired", (-30, -1));
    for (file, reason) in [
        (pki.path("missing.pem"), "not found"),
        (pki.path("garbage.pem"), "holds no certificate"),
        (
            expired,
            "holds no certificate that is valid now: the certificate for \"CN=expired\" expired on",
        ),
    ] {
        let (status, _, stderr) = token(
            &home,
            &["--client-credentials", "--ca-file", file.to_str().unwrap()],
        );
        assert_eq!(status, 2, "{stderr}");
        assert_one_line_error(&stderr, &[&format!("ca_file {}: {reason}", file.display())]);
    }
    assert!(
        !provider.log_text().contains("grant."),
        "the provider was asked: {}",
        provider.log_text()
    );

    // Another CA in ca_file: only its CAs are trusted.
    let other = Pki::new("other");
    let (status, _, stderr) = token(
        &home,
        &[
            "--client-credentials",
            "--ca-file",
            other.path("ca.pem").to_str().unwrap(),
        ],
    );
    assert_eq!(status, 1, "{stderr}");
    assert_one_line_error(
        &stderr,
        &[
            "UnknownIssuer",
            &format!(
                "not signed by a CA of ca_file {}",
                other.path("ca.pem").display()
            ),
        ],
    );

    trust_in_config(&home, &pki.path("ca.pem"));
    let (status, t, stderr) = token(&home, &["--client-credentials"]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(subject_of(&t), "nats-machine");
    assert_eq!(jwt_claims(&t).unwrap()["aud"], RESOURCE);

    // The environment wins over the file, as for every other setting.
    let out = home
        .command(&["token", "--client-credentials", "--min-valid", "1h"])
        .env("NATS_OIDC_CALLOUT_CA_FILE", other.path("ca.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&String::from_utf8_lossy(&out.stderr), &["UnknownIssuer"]);
}

/// Every request of a person's login goes through the `ca_file`: discovery,
/// the device flow, the refresh and the revocation at logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_its_refresh_and_logout_reach_a_private_ca_provider() {
    let pki = Pki::new("provider");
    let provider = Provider::start_tls(&pki);
    let home = Home::new(&provider, "nats-cli");
    trust_in_config(&home, &pki.path("ca.pem"));
    device_login(&provider, &home, "ana", &[]).await;
    let (status, t, stderr) = token(&home, &["--min-valid", "1h"]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(subject_of(&t), "ana");
    assert!(provider.log_text().contains("grant.success refresh_token"));
    let out = home.run(&["logout"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "The refresh token was revoked at {}",
            provider.issuer()
        )),
        "{stderr}"
    );
}
