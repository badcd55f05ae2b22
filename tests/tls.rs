//! `[nats.tls]` against a real nats-server with a private CA (generated
//! here): server-only TLS, mutual TLS, TLS first; and what an operator
//! sees when a file or a certificate is wrong.

mod common;

use std::path::{Path, PathBuf};

use common::pki::Pki;
use common::*;
use nats_oidc_callout::dev::CertAndKey;
use nats_oidc_callout_test_support::config::EXAMPLE_ISSUER;
use nats_oidc_callout_test_support::{ConfigToml, Oidc};
use rcgen::ExtendedKeyUsagePurpose;

/// nats-server's `tls {}` block for client connections.
fn server_tls(pki: &Pki, server: &CertAndKey, verify: bool, first: bool) -> String {
    format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {verify}\n  handshake_first: {first}\n  timeout: 5\n}}\n",
        server.0,
        server.1,
        pki.path("ca.pem")
    )
}

/// The service's `[nats]` keys with a `[nats.tls]` table.
fn service_nats(tls: &str) -> String {
    format!("url = \"tls://{{addr}}\"\nuser = \"auth\"\npassword = \"authpw\"\n\n[nats.tls]\n{tls}")
}

/// A user of the stack over TLS, trusting `pki`'s CA, with a client
/// certificate when one is given.
async fn tls_user(
    stack: &Stack,
    pki: &Pki,
    client: Option<&CertAndKey>,
    first: bool,
) -> Result<TestClient, async_nats::ConnectError> {
    let token = stack.token("ana", &["admin"]);
    let mut options = private_inbox(base_options(&stack.url()).await, &token)
        .user_and_password("anything".into(), token)
        .require_tls(true)
        .add_root_certificates(pki.path("ca.pem"));
    if let Some((cert, key)) = client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if first {
        options = options.tls_first();
    }
    connect_with(&tls_url(stack), options).await
}

fn tls_url(stack: &Stack) -> String {
    stack.url().replace("nats://", "tls://")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_and_its_users_connect_with_mutual_tls_and_a_private_ca() {
    let pki = Pki::new("mutual");
    let server = pki.server(&["127.0.0.1", "localhost"]);
    let service_cert = pki.client("service", (-1, 30));
    let user_cert = pki.client("user", (-1, 30));
    let stack = Stack::start(ServiceOptions {
        nats_extra: server_tls(&pki, &server, true, false),
        nats: Some(service_nats(&format!(
            "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            pki.path("ca.pem"),
            service_cert.0,
            service_cert.1
        ))),
        ..ServiceOptions::default()
    })
    .await;
    let user = tls_user(&stack, &pki, Some(&user_cert), false)
        .await
        .expect("a token login over mutual TLS");
    assert!(delivered(&user.client, &user.client, "orders.tls").await);
    // nats-server asks every client for a certificate.
    assert!(
        tls_user(&stack, &pki, None, false).await.is_err(),
        "a client without a certificate is refused by nats-server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_tls_with_a_private_ca_needs_only_its_ca() {
    let pki = Pki::new("server-only");
    let server = pki.server(&["127.0.0.1"]);
    let stack = Stack::start(ServiceOptions {
        nats_extra: server_tls(&pki, &server, false, false),
        nats: Some(service_nats(&format!(
            "ca_file = {:?}\n",
            pki.path("ca.pem")
        ))),
        ..ServiceOptions::default()
    })
    .await;
    let user = tls_user(&stack, &pki, None, false)
        .await
        .expect("a token login over TLS without a client certificate");
    assert!(delivered(&user.client, &user.client, "orders.tls").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_first_reaches_a_server_that_wants_tls_before_info() {
    let pki = Pki::new("first");
    let server = pki.server(&["127.0.0.1"]);
    let stack = Stack::start(ServiceOptions {
        nats_extra: server_tls(&pki, &server, false, true),
        nats: Some(service_nats(&format!(
            "ca_file = {:?}\nhandshake_first = true\n",
            pki.path("ca.pem")
        ))),
        ..ServiceOptions::default()
    })
    .await;
    tls_user(&stack, &pki, None, true)
        .await
        .expect("a token login, TLS first");
}

/// A config whose service dials `nats_url` with `[nats.tls]` set to
/// `tls`, written into `pki`'s directory as `file`.
fn tls_config(pki: &Pki, file: &str, nats_url: &str, tls: &str) -> PathBuf {
    let config = pki.path(file);
    let text = ConfigToml::new()
        .nats_login(nats_url)
        .nats(&format!("\n[nats.tls]\n{tls}"))
        .oidc(Oidc::new(EXAMPLE_ISSUER).roles_claim("roles"))
        .role("reader", "sub.allow = [\"orders.>\"]");
    std::fs::write(&config, text.to_string()).unwrap();
    config
}

/// `check --online` with that config; its output.
fn check_online(pki: &Pki, nats_url: &str, tls: &str) -> String {
    let out = callout_bin()
        .args(["check", "--online", "--config"])
        .arg(tls_config(pki, "config.toml", nats_url, tls))
        .output()
        .unwrap();
    output_text(&out)
}

/// nats-server with the test servers' callout login, TLS only (`verify`:
/// asking every client for a certificate) with `server`'s certificate.
fn tls_only_server(pki: &Pki, server: &CertAndKey, verify: bool) -> NatsServer {
    let port = free_port();
    NatsServer::start_with(
        tempfile::tempdir().unwrap(),
        port,
        format!(
            "listen: 127.0.0.1:{port}\nauthorization {{ users: [ {{ user: auth, password: authpw }} ] }}\n{}",
            server_tls(pki, server, verify, false)
        ),
    )
}

#[test]
fn check_online_says_what_is_wrong_with_the_tls_connection() {
    let pki = Pki::new("right");
    let other = Pki::new("other");
    // A certificate for another host than the one the service dials.
    let server = pki.server(&["other.example.com"]);
    let nats = tls_only_server(&pki, &server, false);
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let wrong_ca = check_online(
        &other,
        &url,
        &format!("ca_file = {:?}", other.path("ca.pem")),
    );
    assert!(
        wrong_ca.contains("cannot connect to NATS")
            && wrong_ca.contains("UnknownIssuer")
            && wrong_ca.contains("signed by no CA in nats.tls.ca_file"),
        "{wrong_ca}"
    );
    let wrong_name = check_online(&pki, &url, &format!("ca_file = {:?}", pki.path("ca.pem")));
    assert!(
        wrong_name.contains("cannot connect to NATS")
            && wrong_name.contains("certificate not valid for name \"127.0.0.1\"")
            && wrong_name.contains("does not name the host of nats.url"),
        "the host name the certificate does not name: {wrong_name}"
    );

    // A server that asks every client for a certificate, and a service
    // configured without one.
    let verifying = tls_only_server(&pki, &pki.server(&["127.0.0.1"]), true);
    let url = format!("tls://127.0.0.1:{}", verifying.port);
    let no_cert = check_online(&pki, &url, &format!("ca_file = {:?}", pki.path("ca.pem")));
    assert!(
        no_cert.contains("CertificateRequired")
            && no_cert.contains("set nats.tls.cert_file and nats.tls.key_file"),
        "{no_cert}"
    );

    // A server certificate out of its validity period, either way.
    let ca = format!("ca_file = {:?}", pki.path("ca.pem"));
    for (file, days, said) in [
        ("expired", (-30, -1), "has expired"),
        ("early", (2, 30), "not valid yet"),
    ] {
        let cert = pki
            .ca()
            .issue(
                file,
                &["127.0.0.1"],
                ExtendedKeyUsagePurpose::ServerAuth,
                days,
            )
            .unwrap();
        let nats = tls_only_server(&pki, &cert, false);
        let out = check_online(&pki, &format!("tls://127.0.0.1:{}", nats.port), &ca);
        assert!(
            out.contains("cannot connect to NATS") && out.contains(said),
            "{file}: {out}"
        );
    }
}

/// What loading a config with `[nats.tls]` set to `tls` says.
fn config_error(pki: &Pki, tls: &str) -> String {
    let config = tls_config(pki, "bad.toml", "tls://127.0.0.1:4222", tls);
    match nats_oidc_callout::config::Config::load(&config) {
        Ok(_) => panic!("accepted: {tls}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_tls_files_are_config_errors_that_name_the_file_and_the_reason() {
    let pki = Pki::new("files");
    let good = pki.client("good", (-1, 30));
    let expired = pki.client("expired", (-30, -1));
    let early = pki.client("early", (2, 30));
    let other = pki.client("other", (-1, 30));
    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    let q = |p: &Path| format!("{p:?}");
    for (tls, key, reason) in [
        (
            format!("ca_file = {}", q(&pki.path("missing.pem"))),
            "nats.tls.ca_file",
            "not found",
        ),
        (
            format!("ca_file = {}", q(&pki.path("garbage.pem"))),
            "nats.tls.ca_file",
            "holds no certificate",
        ),
        (
            format!("ca_file = {}", q(&expired.0)),
            "nats.tls.ca_file",
            "holds no certificate that is valid now: the certificate for",
        ),
        (
            format!("cert_file = {}", q(&good.0)),
            "nats.tls.key_file",
            "required with nats.tls.cert_file",
        ),
        (
            format!("cert_file = {}\nkey_file = {}", q(&good.0), q(&other.1)),
            "nats.tls.key_file",
            "is not the key of the certificate",
        ),
        (
            format!("cert_file = {}\nkey_file = {}", q(&good.0), q(&good.0)),
            "nats.tls.key_file",
            "no private key",
        ),
        (
            format!(
                "cert_file = {}\nkey_file = {}",
                q(&expired.0),
                q(&expired.1)
            ),
            "nats.tls.cert_file",
            "expired on",
        ),
        (
            format!("cert_file = {}\nkey_file = {}", q(&early.0), q(&early.1)),
            "nats.tls.cert_file",
            "is not valid before",
        ),
    ] {
        let e = config_error(&pki, &tls);
        assert!(e.contains(key) && e.contains(reason), "{tls}: {e}");
    }
    // A bundle with an expired certificate beside a current one (a CA in
    // rotation) is usable: the expired one is left out.
    let bundle = pki.path("bundle.pem");
    let text = std::fs::read_to_string(&expired.0).unwrap()
        + &std::fs::read_to_string(pki.path("ca.pem")).unwrap();
    std::fs::write(&bundle, text).unwrap();
    let config = tls_config(
        &pki,
        "bundle.toml",
        "tls://127.0.0.1:4222",
        &format!("ca_file = {}", q(&bundle)),
    );
    if let Err(e) = nats_oidc_callout::config::Config::load(&config) {
        panic!("a bundle with one current CA is refused: {e}");
    }
}

/// An issuer's server certificate for `names`, from `pki`.
fn issuer_cert(pki: &Pki, names: &[&str]) -> CertAndKey {
    pki.ca().server("issuer", names).unwrap()
}

/// `check --online` of a config trusting the development issuer at
/// `issuer` with more `[oidc]` keys (`key`, TOML value); the issuer's lines
/// of its output (nats.url names no server: NATS is not what is checked).
async fn check_issuer(pki: &Pki, issuer: &str, keys: &[(&str, String)]) -> String {
    let mut oidc = Oidc::dev(issuer);
    for (k, v) in keys {
        oidc = oidc.set(k, v);
    }
    let config = pki.path("issuer.toml");
    let text = ConfigToml::new()
        .nats_login("nats://127.0.0.1:1")
        .oidc(oidc)
        .role("reader", "sub.allow = [\"orders.>\"]");
    std::fs::write(&config, text.to_string()).unwrap();
    let mut command = callout_bin();
    command.args(["check", "--online", "--config"]).arg(&config);
    let out = tokio::process::Command::from(command)
        .output()
        .await
        .unwrap();
    output_text(&out)
        .lines()
        .filter(|l| l.contains("issuer default"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn toml_path(path: &Path) -> String {
    nats_oidc_callout_test_support::config::quote(&path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_says_what_an_https_issuer_with_a_private_ca_wants() {
    let pki = Pki::new("issuer");
    let other = Pki::new("other");
    let issuer = DevIssuer::start_tls(0, &issuer_cert(&pki, &["127.0.0.1", "localhost"]))
        .await
        .unwrap();
    issuer.require_bearer(Some("service-token"));
    let url = issuer.issuer();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let token_file = pki.path("token");
    std::fs::write(&token_file, "service-token\n").unwrap();
    let ca = ("ca_file", toml_path(&pki.ca_file()));
    let token = ("bearer_token_file", toml_path(&token_file));

    let public_roots = check_issuer(&pki, &url, std::slice::from_ref(&token)).await;
    assert!(
        public_roots.contains("UnknownIssuer")
            && public_roots.contains("signed by no CA in oidc.ca_file"),
        "without ca_file the private CA is not trusted: {public_roots}"
    );
    let wrong_ca = check_issuer(
        &pki,
        &url,
        &[("ca_file", toml_path(&other.ca_file())), token.clone()],
    )
    .await;
    assert!(wrong_ca.contains("UnknownIssuer"), "{wrong_ca}");
    let no_token = check_issuer(&pki, &url, std::slice::from_ref(&ca)).await;
    assert!(
        no_token.contains("status 401") && no_token.contains("set oidc.bearer_token_file"),
        "{no_token}"
    );
    let ok = check_issuer(&pki, &url, &[ca.clone(), token.clone()]).await;
    assert!(ok.contains("JWKS has 2 usable keys"), "{ok}");

    std::fs::write(&token_file, "another-token").unwrap();
    let refused = check_issuer(&pki, &url, &[ca.clone(), token.clone()]).await;
    assert!(
        refused.contains("status 401")
            && refused.contains("refused oidc.bearer_token_file's token"),
        "{refused}"
    );
    std::fs::write(&token_file, "service-token").unwrap();

    // A discovery document may name a JWKS elsewhere; the token is not
    // sent there, only to the origins the config names.
    let elsewhere = url.replace("127.0.0.1", "localhost") + "/jwks";
    issuer.advertise_jwks_at(Some(&elsewhere));
    let foreign = check_issuer(&pki, &url, &[ca.clone(), token.clone()]).await;
    assert!(
        foreign.contains("status 401") && foreign.contains("set oidc.jwks_url"),
        "the token must not follow the discovery document: {foreign}"
    );
    let named = check_issuer(
        &pki,
        &url,
        &[ca, token, ("jwks_url", format!("{elsewhere:?}"))],
    )
    .await;
    assert!(named.contains("JWKS has 2 usable keys"), "{named}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_log_in_with_keys_from_an_https_issuer_that_wants_the_services_token() {
    let pki = Pki::new("issuer");
    let token_file = pki.path("token");
    std::fs::write(&token_file, "token-1\n").unwrap();
    let ca_file = pki.path("issuer-ca.pem");
    std::fs::copy(pki.ca_file(), &ca_file).unwrap();
    let stack = Stack::start(ServiceOptions {
        issuer_tls: Some(issuer_cert(&pki, &["127.0.0.1"])),
        issuer_bearer: Some("token-1".into()),
        extra_oidc: format!(
            "ca_file = {}\nbearer_token_file = {}\n",
            toml_path(&ca_file),
            toml_path(&token_file)
        ),
        ..ServiceOptions::default()
    })
    .await;
    let user = stack.client("ana", &["admin"]).await;
    assert!(delivered(&user.client, &user.client, "orders.https").await);

    // kubelet rotates the token: the next fetch sends the new one. A
    // rotated signing key makes the service fetch the keys again.
    std::fs::write(&token_file, "token-2\n").unwrap();
    stack.issuer.require_bearer(Some("token-2"));
    stack.issuer.rotate(jsonwebtoken::Algorithm::RS256);
    let admitted = admitted_within_cooldowns(&stack).await;
    assert!(
        admitted,
        "a token signed by the new key is admitted after the fetch with the new bearer token"
    );

    // A CA file rewritten with something unusable keeps the CA read before.
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    stack.issuer.rotate(jsonwebtoken::Algorithm::RS256);
    assert!(admitted_within_cooldowns(&stack).await);
    assert!(
        stack
            .service
            .log_text()
            .contains("keeping the version read before"),
        "the log says the new CA file is not used: {}",
        stack.service.log_text()
    );

    // A CA file replaced by another CA's: the next fetch trusts only the
    // new one (no pooled connection, no resumed session keeps the old).
    let other = Pki::new("other");
    std::fs::copy(other.ca_file(), &ca_file).unwrap();
    stack.issuer.rotate(jsonwebtoken::Algorithm::RS256);
    // Each attempt with the new key asks for a fetch (once per cool-down).
    let mut refused = 0;
    while !stack.service.log_text().contains("UnknownIssuer") {
        assert!(
            connect(&stack.url(), &stack.token("ana", &["admin"]))
                .await
                .is_err(),
            "keys from an issuer the new CA does not vouch for are not used"
        );
        refused += 1;
        assert!(
            refused < 60,
            "no fetch failed: {}",
            stack.service.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    std::fs::copy(pki.ca_file(), &ca_file).unwrap();
    assert!(admitted_within_cooldowns(&stack).await);
}

/// Whether a new token of the issuer's newest key is admitted once the
/// service's refetch cool-down (2 s in the test config) allows a fetch.
async fn admitted_within_cooldowns(stack: &Stack) -> bool {
    for _ in 0..60 {
        if connect(&stack.url(), &stack.token("ana", &["admin"]))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_and_ca_are_used_on_the_next_reconnect_without_a_restart() {
    let (old, new) = (Pki::new("old"), Pki::new("new"));
    for pki in [&old, &new] {
        pki.server(&["127.0.0.1"]);
        pki.client("service", (-1, 30));
        pki.client("user", (-1, 30));
    }
    // The service's files, where cert-manager would rotate them.
    let files = tempfile::tempdir().unwrap();
    let installed = |pki: &Pki| {
        for (from, to) in [
            ("ca.pem", "ca.pem"),
            ("service.pem", "tls.crt"),
            ("service-key.pem", "tls.key"),
        ] {
            let target = files.path().join(to);
            let _ = std::fs::remove_file(&target);
            std::fs::copy(pki.path(from), &target).unwrap();
        }
    };
    installed(&old);
    let stack = Stack::start(ServiceOptions {
        nats_extra: server_tls(&old, &old.path_pair("server"), true, false),
        nats: Some(service_nats(&format!(
            "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            files.path().join("ca.pem"),
            files.path().join("tls.crt"),
            files.path().join("tls.key"),
        ))),
        ..ServiceOptions::default()
    })
    .await;
    let mut stack = stack;
    let user = |pki: &Pki| pki.path_pair("user");
    tls_user_with(&stack, &old, &user(&old))
        .await
        .expect("admitted before the rotation");

    // A new CA everywhere: nats-server restarts with it, the service's
    // files are replaced under it.
    installed(&new);
    let conf = stack.nats.dir().join("nats.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let old_dir = old.ca_file().parent().unwrap().display().to_string();
    let new_dir = new.ca_file().parent().unwrap().display().to_string();
    std::fs::write(&conf, text.replace(&old_dir, &new_dir)).unwrap();
    stack.nats.restart();
    assert!(
        admitted_eventually(&stack, &new, &user(&new)).await,
        "the service reconnects with the new CA and client certificate: {}",
        stack.service.log_text()
    );

    // An unusable new certificate keeps the one read before, and says so.
    std::fs::write(files.path().join("tls.crt"), "half-written\n").unwrap();
    stack.nats.restart();
    assert!(admitted_eventually(&stack, &new, &user(&new)).await);
    let log = stack.service.log_text();
    assert!(
        log.contains("tls.crt") && log.contains("keeping the version read before"),
        "{log}"
    );
}

/// A user over TLS with a client certificate, trusting `pki`'s CA.
async fn tls_user_with(
    stack: &Stack,
    pki: &Pki,
    cert: &CertAndKey,
) -> Result<TestClient, async_nats::ConnectError> {
    tls_user(stack, pki, Some(cert), false).await
}

/// Whether the user is admitted once the service is back (it reconnects
/// after nats-server's restart; the wait is bounded, not timed).
async fn admitted_eventually(stack: &Stack, pki: &Pki, cert: &CertAndKey) -> bool {
    for _ in 0..60 {
        if tls_user_with(stack, pki, cert).await.is_ok() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    false
}

#[test]
fn wrong_issuer_tls_settings_are_config_errors_that_name_the_key_and_the_reason() {
    let pki = Pki::new("issuer-files");
    std::fs::write(pki.path("empty-token"), "\n").unwrap();
    std::fs::write(pki.path("two-tokens"), "a b\n").unwrap();
    let missing = toml_path(&pki.path("missing.pem"));
    for (key, value, reason) in [
        ("ca_file", missing.clone(), "not found"),
        ("bearer_token_file", missing, "not found"),
        (
            "bearer_token_file",
            toml_path(&pki.path("empty-token")),
            "is empty",
        ),
        (
            "bearer_token_file",
            toml_path(&pki.path("two-tokens")),
            "holds more than one token",
        ),
        (
            "jwks_url",
            "\"http://keys.example.com/jwks\"".into(),
            "must use https",
        ),
    ] {
        let config = pki.path("bad.toml");
        let text = ConfigToml::new()
            .nats_login("nats://127.0.0.1:4222")
            .oidc(Oidc::new(EXAMPLE_ISSUER).set(key, &value))
            .role("reader", "sub.allow = [\"orders.>\"]");
        std::fs::write(&config, text.to_string()).unwrap();
        let e = match nats_oidc_callout::config::Config::load(&config) {
            Ok(_) => panic!("accepted: {key} = {value}"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&format!("oidc.{key}")) && e.contains(reason),
            "{key} = {value}: {e}"
        );
    }
    let both = ConfigToml::new().nats_login("nats://127.0.0.1:4222").oidc(
        Oidc::new(EXAMPLE_ISSUER)
            .set("jwks_url", "\"https://keys.example.com/jwks\"")
            .set(
                "discovery_url",
                "\"https://keys.example.com/.well-known/openid-configuration\"",
            ),
    );
    let config = pki.path("both.toml");
    std::fs::write(&config, both.to_string()).unwrap();
    let e = nats_oidc_callout::config::Config::load(&config)
        .err()
        .expect("jwks_url and discovery_url together are refused")
        .to_string();
    assert!(e.contains("oidc.jwks_url") && e.contains("not both"), "{e}");
}
