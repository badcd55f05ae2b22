//! `nats-oidc-callout dev`: the README's first command. Started as a user
//! would; the printed tokens must work through the nats-server it started,
//! and the printed logout and `revoke` must end the sessions they name.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_tokens_that_work() {
    dev_works(false, false).await;
}

/// `dev --operator`: the same, with nats-server in operator mode and the
/// printed commands presenting the sentinel it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_operator_prints_tokens_and_a_sentinel_that_work() {
    dev_works(true, false).await;
}

/// `dev --tls`: TLS everywhere with a throwaway CA; the printed commands
/// carry the CA and a client certificate (nats-server asks every client
/// for one), and the printed curl the CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tls_prints_tokens_and_certificates_that_work() {
    dev_works(false, true).await;
}

/// `client`'s connection is closed, and its `token` refused from then on.
async fn closed_and_refused(
    url: &str,
    client: &mut TestClient,
    token: &str,
    tls: Option<&std::path::Path>,
    whose: &str,
) {
    assert!(
        client
            .wait_event("disconnected", Duration::from_secs(30))
            .await,
        "{whose}: the connection is closed: {:?}",
        client.events()
    );
    assert!(
        dev_client(url, token, tls).await.is_err(),
        "{whose}: the token is refused"
    );
}

/// A client of the stack `dev` started: over TLS with the user certificate
/// `dev --tls` wrote into `generated`.
async fn dev_client(
    url: &str,
    token: &str,
    tls: Option<&std::path::Path>,
) -> Result<TestClient, async_nats::ConnectError> {
    let Some(dir) = tls else {
        return connect(url, token).await;
    };
    let options = base_options(url)
        .await
        .user_and_password("dev".into(), token.into())
        .require_tls(true)
        .add_root_certificates(dir.join("ca.pem"))
        .add_client_certificate(dir.join("user.pem"), dir.join("user-key.pem"));
    connect_with(url, options).await
}

/// `dev` started as a user starts it; its stdout lines arrive on `lines`.
/// A failing test shows what it said on stderr and stops it (and so the
/// nats-server it started), as the end of a passing one does.
struct DevRun {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    _show: ShowLog,
    _stop: StopOnPanic,
    _log_dir: tempfile::TempDir,
}

struct ShowLog(std::path::PathBuf);

impl Drop for ShowLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- dev output ----\n{}",
                std::fs::read_to_string(&self.0).unwrap_or_default()
            );
        }
    }
}

struct StopOnPanic(u32);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.0.to_string())
                .status();
        }
    }
}

fn spawn_dev(args: &[String]) -> DevRun {
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools");
    let _ = nats_server_bin();
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("dev.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .arg("dev")
        .args(args)
        .arg("--tools-dir")
        .arg(&tools)
        .stdout(Stdio::piped())
        .stderr(log)
        // A process group of its own, as a shell gives a command: Ctrl-C
        // at the end goes to the group.
        .process_group(0)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    DevRun {
        _stop: StopOnPanic(child.id()),
        child,
        lines,
        _show: ShowLog(log_path),
        _log_dir: log_dir,
    }
}

async fn dev_works(operator: bool, tls: bool) {
    let port = free_port();
    let mut args = vec!["--nats-port".to_string(), port.to_string()];
    if operator {
        args.push("--operator".into());
    }
    if tls {
        args.push("--tls".into());
    }
    let mut dev = spawn_dev(&args);
    let rx = &dev.lines;
    let (mut admin, mut reader, mut curl) = (None, None, None);
    let (mut logout, mut revoke) = (None, None);
    let mut generated = None;
    let mut sentinel = None;
    let mut commands = Vec::new();
    let mut try_admin = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while admin.is_none()
        || reader.is_none()
        || curl.is_none()
        || logout.is_none()
        || revoke.is_none()
    {
        let line = rx
            .recv_timeout(deadline - std::time::Instant::now())
            .expect("dev printed its tokens");
        // A printed command without its comment.
        let command = line.split('#').next().unwrap().trim().to_string();
        if command.starts_with("curl ") && command.ends_with("/logout'") {
            logout = Some(command);
        } else if command.contains(" revoke --config ") {
            revoke = Some(command);
        } else if let Some(t) = line.strip_prefix("ADMIN_TOKEN=") {
            admin = Some(t.to_string());
        } else if let Some(t) = line.strip_prefix("READER_TOKEN=") {
            reader = Some(t.to_string());
        } else if let Some(d) = line.trim().strip_prefix("generated configs:") {
            generated = Some(std::path::PathBuf::from(d.trim()));
        } else if let Some(u) = line.trim().strip_prefix("curl '") {
            curl = Some(u.trim_end_matches('\'').to_string());
        } else if let Some(u) = line.trim().strip_prefix("curl --cacert") {
            curl = Some(format!("--cacert{u}"));
        } else if command.contains(" try --server ") && command.contains("ADMIN_TOKEN") {
            try_admin = Some(command);
        } else if line.trim().starts_with("nats --server") {
            if let Some((_, rest)) = line.split_once("--creds ") {
                sentinel = rest.split_whitespace().next().map(std::path::PathBuf::from);
            }
            commands.push(command);
        }
    }
    // A quiet start: nothing went wrong, so nothing says so (its own
    // readiness probe once raced the service and logged a refusal).
    let started = std::fs::read_to_string(&dev._show.0).unwrap();
    for bad in [" ERROR ", " WARN ", "authorization violation"] {
        assert!(
            !started.contains(bad),
            "{bad:?} in dev's start-up log:\n{started}"
        );
    }
    let url = format!("{}://127.0.0.1:{port}", if tls { "tls" } else { "nats" });
    let certs = generated.clone().filter(|_| tls);
    // The commands dev printed present the sentinel; so do these clients.
    assert_eq!(
        sentinel.is_some(),
        operator,
        "--creds in the printed commands"
    );
    if let Some(creds) = sentinel {
        register_sentinel(&url, creds);
    }
    // The printed commands, read as the nats CLI reads its flags (in
    // operator mode it drops --creds beside --user and --password).
    let vars = [
        ("ADMIN_TOKEN", admin.as_deref().unwrap()),
        ("READER_TOKEN", reader.as_deref().unwrap()),
    ];
    let admin_pub = commands
        .iter()
        .find(|c| c.ends_with("pub orders.new hello"))
        .expect("a printed admin command");
    let reader_sub = commands
        .iter()
        .find(|c| c.ends_with("sub 'orders.>'") && c.contains("READER_TOKEN"))
        .expect("a printed reader command");
    let cli_admin = connect_as_nats_cli(&nats_cli_context(admin_pub, &vars))
        .await
        .expect("the printed admin command is admitted");
    let cli_reader = connect_as_nats_cli(&nats_cli_context(reader_sub, &vars))
        .await
        .expect("the printed reader command is admitted");
    assert!(delivered(&cli_admin, &cli_reader, "orders.cli").await);
    // The printed `try`, pasted into a shell: ana's publish and
    // subscription are allowed (with the TLS flags and the sentinel
    // that mode prints).
    let try_admin = try_admin.expect("a printed try of ADMIN_TOKEN");
    let (code, said) = run_printed(&try_admin, &vars);
    assert_eq!(code, Some(0), "{try_admin}:\n{said}");
    assert!(
        said.contains("sub orders.>: allowed") && said.contains("pub orders.new: allowed"),
        "{said}"
    );
    let (admin_token, reader_token) = (admin.unwrap(), reader.unwrap());
    let mut admin = dev_client(&url, &admin_token, certs.as_deref())
        .await
        .expect("printed admin token works");
    let mut reader = dev_client(&url, &reader_token, certs.as_deref())
        .await
        .expect("printed reader token works");
    assert!(
        delivered(&admin.client, &reader.client, "orders.new").await,
        "admin events {:?}, reader events {:?}, nats-server log:\n{}",
        admin.events(),
        reader.events(),
        generated
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("nats.log")).ok())
            .unwrap_or_default()
    );
    assert!(
        not_delivered(&reader.client, &admin.client, "orders.new").await,
        "reader may not publish"
    );
    assert!(
        reader
            .wait_event("permissions violation", Duration::from_secs(2))
            .await
    );

    let curl = curl.unwrap();
    let mint = |curl: String| async move {
        match curl.split_once("--cacert ") {
            None => reqwest::get(curl).await.unwrap().text().await.unwrap(),
            Some((_, rest)) => {
                let (ca, url) = rest.split_once(' ').unwrap();
                let url = url.trim_matches('\'');
                assert!(url.starts_with("https://"), "{url}");
                http_client(ca)
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            }
        }
    };
    assert_eq!(
        curl.contains("--cacert "),
        tls,
        "--cacert with --tls: {curl}"
    );
    let minted = mint(curl.clone()).await;
    dev_client(&url, &minted, certs.as_deref())
        .await
        .expect("a token minted by the printed curl command works");
    if tls {
        assert!(
            connect(&url.replace("tls://", "nats://"), &minted)
                .await
                .is_err(),
            "nats-server refuses a client without TLS and a certificate"
        );
    }

    // The printed logout: the issuer sends a back-channel logout of ana's
    // session, her connection is closed and her token refused.
    let logout = logout.unwrap();
    let said = send_logout(&logout).await;
    assert!(said.contains(": 200 OK"), "{logout}: {said}");
    closed_and_refused(
        &url,
        &mut admin,
        &admin_token,
        certs.as_deref(),
        "ana's, logged out",
    )
    .await;

    // The printed revoke, pasted into a shell: rita's connection is closed
    // and her token refused.
    let revoke = revoke.unwrap();
    let ran =
        tokio::task::block_in_place(|| Command::new("sh").arg("-c").arg(&revoke).output().unwrap());
    assert!(
        ran.status.success()
            && String::from_utf8_lossy(&ran.stdout).contains("revoked sub user-rita"),
        "{revoke}: {}\n{}\n{}",
        ran.status,
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    closed_and_refused(
        &url,
        &mut reader,
        &reader_token,
        certs.as_deref(),
        "rita's, revoked",
    )
    .await;

    // A new login (iat in whole seconds: a later second) is admitted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (user, roles) in [("ana", "admin"), ("rita", "reader")] {
        let fresh = mint(curl.replace(
            "user=bo&roles=reader",
            &format!("user={user}&roles={roles}"),
        ))
        .await;
        dev_client(&url, &fresh, certs.as_deref())
            .await
            .unwrap_or_else(|e| panic!("a new login of {user} is admitted: {e}"));
    }

    // Ctrl-C in a terminal: SIGINT to the whole process group.
    let _ = Command::new("kill")
        .arg("-INT")
        .arg("--")
        .arg(format!("-{}", dev.child.id()))
        .status();
    let status = dev.child.wait().unwrap();
    let said = std::fs::read_to_string(&dev._show.0).unwrap();
    assert!(
        status.success(),
        "dev exits cleanly on Ctrl-C: {status}\n{said}"
    );
    assert!(
        !said.lines().any(|l| l.starts_with("error:")),
        "a quiet stop: {said}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the nats-server dev started is stopped with it"
    );
}

/// Ctrl-C while `dev` starts (after it made its temporary directory with
/// throwaway seeds, before it printed anything) stops it cleanly: the
/// directory is removed and the nats-server it started is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_dev_starts_leaves_no_temporary_directory() {
    let _ = nats_server_bin();
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools");
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let err = tmp.path().join("dev.err");
    let temp = tmp.path().join("temp");
    std::fs::create_dir(&temp).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .args(["dev", "--nats-port", &port.to_string(), "--tools-dir"])
        .arg(&tools)
        .env("TMPDIR", &temp)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // As soon as the directory is there: dev is still starting.
    let made = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + HANG_GUARD;
        loop {
            let entries: Vec<_> = std::fs::read_dir(&temp)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            if let Some(dir) = entries
                .into_iter()
                .find(|n| n.starts_with("nats-oidc-callout-dev-"))
            {
                break dir;
            }
            if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!(
                    "dev made no temporary directory: {}",
                    std::fs::read_to_string(&err).unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let status = tokio::task::block_in_place(|| child.wait().unwrap());
    let said = std::fs::read_to_string(&err).unwrap();
    assert!(
        status.success(),
        "dev stops cleanly on Ctrl-C: {status}\n{said}"
    );
    let left: Vec<_> = std::fs::read_dir(&temp).unwrap().collect();
    assert!(left.is_empty(), "{made} was left behind: {left:?}\n{said}");
    wait_until("the nats-server dev started is stopped", || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    })
    .await;
}

/// An HTTP client trusting only the CA in `ca` (`dev --tls`).
fn http_client(ca: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

/// Does what the printed `curl [--cacert CA] -d FORM 'URL'` does: POSTs
/// the form; what the issuer answered.
async fn send_logout(curl: &str) -> String {
    let words: Vec<&str> = curl.split_whitespace().collect();
    let after = |flag: &str| words.iter().position(|w| *w == flag).map(|i| words[i + 1]);
    let http = match after("--cacert") {
        Some(ca) => http_client(ca),
        None => reqwest::Client::new(),
    };
    let form = after("-d").unwrap_or_else(|| panic!("a form in {curl}"));
    let url = words.last().unwrap().trim_matches('\'');
    let answer = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .unwrap();
    let status = answer.status();
    format!("{status}: {}", answer.text().await.unwrap())
}

/// Runs `dev` with `args`, expecting it to exit by itself within 30 s:
/// (exit status, stdout, stderr).
fn dev_exits(args: &[String]) -> (std::process::ExitStatus, String, String) {
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools");
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .arg("dev")
        .args(args)
        .arg("--tools-dir")
        .arg(&tools)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dev kept running:\n{}\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&err).unwrap(),
    )
}

/// Another nats-server, without any authentication, on the port `dev`
/// is asked to use: `dev` must not hand out tokens for it (there any
/// password connects and nothing is refused). It stops with an error that
/// names the port and the way out, and leaves the other server alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_refuses_a_nats_port_another_server_holds() {
    let _ = nats_server_bin();
    let port = free_port();
    let foreign = NatsServer::start_with(
        tempfile::tempdir().unwrap(),
        port,
        format!("listen: 127.0.0.1:{port}\n"),
    );
    let (status, stdout, stderr) =
        tokio::task::block_in_place(|| dev_exits(&["--nats-port".to_string(), port.to_string()]));
    assert!(!status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port} is not free")) && stderr.contains("--nats-port"),
        "{stderr}"
    );
    assert!(!stdout.contains("ADMIN_TOKEN"), "{stdout}");
    // The other server was left running.
    assert!(
        connect(&foreign.url(), "x").await.is_ok(),
        "the foreign server still answers"
    );
}

/// Any program on the port (here a bare listener) is refused the same way,
/// and so is a busy `--issuer-port`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_refuses_busy_ports_with_a_precise_error() {
    let _ = nats_server_bin();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let (status, stdout, stderr) =
        tokio::task::block_in_place(|| dev_exits(&["--nats-port".to_string(), busy.to_string()]));
    assert!(!status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{busy} is not free")),
        "{stderr}"
    );

    let nats_port = free_port();
    let (status, stdout, stderr) = tokio::task::block_in_place(|| {
        dev_exits(&[
            "--nats-port".to_string(),
            nats_port.to_string(),
            "--issuer-port".to_string(),
            busy.to_string(),
        ])
    });
    assert!(!status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot start the development issuer on 127.0.0.1:{busy}"
        )) && stderr.contains("--issuer-port 0"),
        "{stderr}"
    );
    assert!(!stdout.contains("ADMIN_TOKEN"), "{stdout}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_err(),
        "no nats-server was left behind"
    );
}

/// The development issuer's `POST /logout` says what it lacks: a `sub` or
/// `sid`, a client registered for back-channel logouts, an answer from
/// the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_issuers_logout_endpoint_says_what_is_missing() {
    let issuer = DevIssuer::start(0).await.unwrap();
    let logout = format!("{}/logout", issuer.issuer());
    let post = |body: &'static str| {
        let logout = logout.clone();
        async move {
            let answer = reqwest::Client::new()
                .post(logout)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    };
    let (status, said) = post("").await;
    assert_eq!(status, 400, "{said}");
    assert!(said.contains("sub=") && said.contains("sid="), "{said}");
    let (status, said) = post("sid=s1").await;
    assert_eq!(status, 409, "{said}");
    assert!(said.contains("no client registered"), "{said}");

    // A registered client that hangs up on every request.
    let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = rude.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((connection, _)) = rude.accept().await {
            drop(connection);
        }
    });
    issuer.register_backchannel_logout(
        &format!("http://127.0.0.1:{port}/backchannel-logout"),
        "nats",
    );
    let (status, said) = post("sub=user-ana").await;
    assert_eq!(status, 502, "{said}");
    assert!(said.contains("could not be sent"), "{said}");
    assert!(
        !said.contains("eyJ"),
        "the logout token is shown nowhere: {said}"
    );
}

/// Does what a printed `curl -s -d 'JSON' 'URL/token'` does (the
/// development issuer's `POST /token`): the token it answered.
async fn mint_workload(curl: &str) -> String {
    let body = curl
        .split_once("-d '")
        .and_then(|(_, rest)| rest.split_once("' "))
        .map(|(json, _)| json)
        .unwrap_or_else(|| panic!("a JSON body in {curl}"));
    let url = curl
        .split_whitespace()
        .last()
        .unwrap()
        .trim_matches(|c| c == '\'' || c == ')');
    let answer = reqwest::Client::new()
        .post(url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{curl}: {}", answer.status());
    answer.text().await.unwrap()
}

/// Runs a printed command in a shell with `vars` set: (exit status, stdout).
fn run_printed(command: &str, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = tokio::task::block_in_place(|| {
        Command::new("sh")
            .arg("-c")
            .arg(command)
            .envs(vars.iter().copied())
            .output()
            .unwrap()
    });
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The printed workload commands: a GitHub-shaped token of acme/orders on
/// main is admitted by the binding `orders-deploy` (and the printed `try`
/// shows its grants); the printed one of another branch matches no binding
/// and is refused; the Kubernetes and Google presets, as minted and with
/// the claim their binding pins changed. The printed `try` of the reader
/// shows nats-server denying her publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mints_workload_tokens_its_bindings_admit_or_refuse() {
    let port = free_port();
    let mut dev = spawn_dev(&["--nats-port".to_string(), port.to_string()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut printed = Vec::new();
    loop {
        let line = dev
            .lines
            .recv_timeout(deadline - std::time::Instant::now())
            .expect("dev printed its instructions");
        if line.contains("Ctrl-C stops everything") {
            break;
        }
        printed.push(line);
    }
    let find = |what: &str, test: &dyn Fn(&str) -> bool| -> String {
        printed
            .iter()
            .map(|l| l.split('#').next().unwrap().trim())
            .find(|l| test(l))
            .unwrap_or_else(|| panic!("no printed {what} in\n{}", printed.join("\n")))
            .to_string()
    };
    let reader_token = find("READER_TOKEN", &|l| l.starts_with("READER_TOKEN="));
    let reader_token = reader_token.trim_start_matches("READER_TOKEN=");
    let ci_mint = find("CI_TOKEN mint", &|l| l.starts_with("CI_TOKEN=$(curl "));
    let ci_try = find("try of CI_TOKEN", &|l| {
        l.contains(" try ") && l.contains("CI_TOKEN")
    });
    let other_branch = find("refused mint", &|l| {
        l.starts_with("curl -s ") && l.contains("refs/heads/dev")
    });
    let reader_try = find("try of READER_TOKEN", &|l| {
        l.contains(" try ") && l.contains("READER_TOKEN")
    });
    let url = format!("nats://127.0.0.1:{port}");

    let ci = mint_workload(&ci_mint).await;
    let (code, said) = run_printed(&ci_try, &[("CI_TOKEN", &ci)]);
    assert_eq!(code, Some(0), "{ci_try}:\n{said}");
    assert!(said.contains("sub orders.>: allowed"), "{said}");
    let refused = mint_workload(&other_branch).await;
    assert!(connect(&url, &refused).await.is_err(), "{other_branch}");
    let (code, said) = run_printed(&ci_try, &[("CI_TOKEN", &refused)]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("REFUSED by nats-server"), "{said}");

    let issuer = ci_mint
        .split_whitespace()
        .last()
        .unwrap()
        .trim_matches(|c| c == '\'' || c == ')')
        .to_string();
    for (body, admitted) in [
        (r#"{"preset": "kubernetes"}"#, true),
        (
            r#"{"preset": "kubernetes", "claims": {"sub": "system:serviceaccount:orders:other", "/kubernetes.io/serviceaccount/name": "other"}}"#,
            false,
        ),
        (r#"{"preset": "google"}"#, true),
        (
            r#"{"preset": "google", "claims": {"sub": "104200000000000000002"}}"#,
            false,
        ),
    ] {
        let token = mint_workload(&format!("curl -s -d '{body}' '{issuer}'")).await;
        assert_eq!(connect(&url, &token).await.is_ok(), admitted, "{body}");
    }

    let (code, said) = run_printed(&reader_try, &[("READER_TOKEN", reader_token)]);
    assert_eq!(code, Some(1), "{reader_try}:\n{said}");
    assert!(
        said.contains("sub orders.>: allowed")
            && said.contains(
                "pub orders.new: DENIED by nats-server: Permissions Violation for Publish to \"orders.new\""
            ),
        "{said}"
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(dev.child.id().to_string())
        .status();
    let _ = dev.child.wait();
}

/// The development issuer's `POST /token` says what is wrong with a
/// request: not JSON, an unknown field or preset, a claim path through a
/// value that is not an object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_issuers_token_endpoint_says_what_is_wrong() {
    let issuer = DevIssuer::start(0).await.unwrap();
    let url = format!("{}/token", issuer.issuer());
    for (body, expected) in [
        ("preset=github", "the body is not a token request"),
        (
            r#"{"preset": "gitlab"}"#,
            r#"preset "gitlab" is not one of ["github", "kubernetes", "google"]"#,
        ),
        (r#"{"presets": "github"}"#, "unknown field `presets`"),
        (
            r#"{"preset": "github", "claims": {"/ref/x": 1}}"#,
            r#"claim "/ref/x": its parent is not an object"#,
        ),
    ] {
        let answer = reqwest::Client::new()
            .post(&url)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let said = answer.text().await.unwrap();
        assert_eq!(status, 400, "{body}: {said}");
        assert!(said.contains(expected), "{body}: {said}");
    }
}
