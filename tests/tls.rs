//! `[nats.tls]` against a real nats-server with a private CA (generated
//! here): server-only TLS, mutual TLS, TLS first; and what an operator
//! sees when a file or a certificate is wrong.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use nats_oidc_callout_test_support::config::EXAMPLE_ISSUER;
use nats_oidc_callout_test_support::{ConfigToml, Oidc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A private CA and the files it signs, in a directory of their own.
struct Pki {
    dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            ca: Issuer::new(params, key),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A certificate for `names` (host names or addresses), valid from
    /// `from` to `until` days from now, written as `<file>.pem` and
    /// `<file>-key.pem`.
    fn issue(
        &self,
        file: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        (from, until): (i64, i64),
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(until);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.path(&format!("{file}.pem")),
            self.path(&format!("{file}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        write_private(&key_path, &key.serialize_pem());
        (cert_path, key_path)
    }

    fn server(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        self.issue(
            "server",
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            (-1, 30),
        )
    }

    fn client(&self, file: &str, validity: (i64, i64)) -> (PathBuf, PathBuf) {
        self.issue(file, &[], ExtendedKeyUsagePurpose::ClientAuth, validity)
    }
}

/// nats-server's `tls {}` block for client connections.
fn server_tls(pki: &Pki, server: &(PathBuf, PathBuf), verify: bool, first: bool) -> String {
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
    client: Option<&(PathBuf, PathBuf)>,
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
fn tls_only_server(pki: &Pki, server: &(PathBuf, PathBuf), verify: bool) -> NatsServer {
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
}
