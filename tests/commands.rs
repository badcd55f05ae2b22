//! The operator subcommands: check, explain, health.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_roles_permissions_and_expiry_of_a_good_token() {
    let issuer = DevIssuer::start(0).await.unwrap();
    let (_dir, config) = write_config(&ConfigToml::dev(&issuer.issuer()));
    let token = issuer.token("rita", AUDIENCE, &["reader", "guest"], 600);
    let inbox = nats_oidc_client::inbox::of_token(&token).unwrap();
    let out = tokio::task::spawn_blocking(move || explain_stdin(&config, &token))
        .await
        .unwrap();
    let t = output_text(&out);
    assert!(out.status.success(), "{t}");
    // Only the explanation: no log lines beside it.
    assert!(
        out.stderr.is_empty(),
        "explain wrote to stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "platform: generic (none recognised from the issuer URL; platform = \"...\" declares one); bindings pin by sub",
        "user:     rita",
        "roles:    [\"reader\", \"guest\"]",
        "mapped:   [\"reader\"]",
        "account:  APP",
        &format!("  allow:  {inbox}.>, orders.>"),
        "  deny:   $SYS.>, orders.secret.>",
        "verdict:  ALLOWED",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in\n{t}");
    }
    assert!(t.contains("(in 600s;") || t.contains("(in 599s;"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_reason_for_a_refusal() {
    let issuer = DevIssuer::start(0).await.unwrap();
    let (_dir, config) = write_config(&ConfigToml::dev(&issuer.issuer()));
    let unmapped = issuer.token("gus", AUDIENCE, &["guest"], 600);
    let wrong_aud = issuer.token("gus", "other-api", &["admin"], 600);
    let (a, b) = tokio::task::spawn_blocking(move || {
        let a = callout_bin()
            .args(["explain", "--config"])
            .arg(&config)
            .args(["--token", &unmapped])
            .output()
            .unwrap();
        let b = explain_stdin(&config, &wrong_aud);
        (a, b)
    })
    .await
    .unwrap();
    assert_eq!(a.status.code(), Some(1));
    assert!(
        output_text(&a).contains("verdict:  REFUSED: no mapped role"),
        "{}",
        output_text(&a)
    );
    assert_eq!(b.status.code(), Some(1));
    assert!(
        output_text(&b).contains("REFUSED: token audience [\"other-api\"]")
            && output_text(&b).contains("[token_audience]"),
        "{}",
        output_text(&b)
    );
}

#[test]
fn check_warns_about_risky_choices() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("issuer.nk"),
        nkeys::KeyPair::new_account().seed().unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path().join("issuer.nk"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .unwrap()
            .replace("\"/etc/nats-oidc-callout/issuer.nk\"", "\"issuer.nk\"")
            + "\n[roles.ops]\nsub.allow = [\"$SYS.ACCOUNT.>\"]\n\n[roles.nobody]\n\n[roles.root]\naccount = \"SYS\"\nsub.allow = [\"x\"]\n";
    let config = dir.path().join("config.toml");
    std::fs::write(&config, example).unwrap();
    let out = callout_bin()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let t = output_text(&out);
    assert!(out.status.success(), "warnings do not fail the check: {t}");
    assert!(t.contains("warning: callout.xkey_seed is not set"), "{t}");
    assert!(
        t.contains("warning: roles.admin.pub.allow grants \">\""),
        "{t}"
    );
    assert!(
        t.contains("warning: roles.ops.sub.allow grants \"$SYS.ACCOUNT.>\""),
        "{t}"
    );
    assert!(t.contains("warning: roles.nobody: allows nothing"), "{t}");
    assert!(
        t.contains(
            "warning: roles.root.account is \"SYS\": if that is nats-server's system account"
        ),
        "{t}"
    );
    assert!(
        t.contains("warning: callout.issuer_seed_file: ")
            && t.contains("issuer.nk is readable by every user on this host (mode 0644)"),
        "{t}"
    );
    assert!(t.contains("is valid (7 warnings)"), "{t}");

    std::fs::set_permissions(
        dir.path().join("issuer.nk"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let out = callout_bin()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let t = output_text(&out);
    assert!(!t.contains("readable by every user"), "{t}");
    assert!(t.contains("is valid (6 warnings)"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_readiness_of_the_running_service() {
    // `health --config` probes the port the config names: a fixed one.
    let port = free_port();
    let stack = Stack::start(ServiceOptions {
        http_port: Some(port),
        ..Default::default()
    })
    .await;
    let config = stack.service.config.clone();
    let ok = tokio::task::spawn_blocking(move || {
        callout_bin()
            .args(["health", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(ok.status.success(), "{}", output_text(&ok));

    let config = stack.service.config.clone();
    let dead = free_port();
    let down = tokio::task::spawn_blocking(move || {
        callout_bin()
            .args(["health", "--config"])
            .arg(&config)
            .args(["--url", &format!("http://127.0.0.1:{dead}/readyz")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(down.status.code(), Some(1), "{}", output_text(&down));
    assert!(
        output_text(&down).contains("not ready"),
        "{}",
        output_text(&down)
    );
}

#[test]
fn keygen_writes_a_private_seed_and_pubkey_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, prefix) in [("account", 'A'), ("curve", 'X'), ("user", 'U')] {
        let path = dir.path().join(format!("{kind}.nk"));
        let out = callout_bin()
            .args(["keygen", kind, "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        let public = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(public.starts_with(prefix), "{public}");
        assert!(out.stdout.is_empty(), "the seed goes only to the file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let back = callout_bin().arg("pubkey").arg(&path).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&back.stdout).trim(), public);
        let again = callout_bin()
            .args(["keygen", kind, "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            again.status.code(),
            Some(2),
            "an existing seed is never overwritten"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_user_prints_a_seed_nats_server_admits_as_the_printed_public_key() {
    // The Kubernetes recipe's `keygen user > nats.nk`: only the seed on
    // stdout, the public key (for nats-server's users) on stderr.
    let out = callout_bin().args(["keygen", "user"]).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let seed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let public = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(seed.starts_with("SU"), "stdout is the user seed alone");
    assert!(public.starts_with('U'), "{public}");
    let port = free_port();
    let nats = NatsServer::start_with(
        tempfile::tempdir().unwrap(),
        port,
        format!("listen: 127.0.0.1:{port}\nauthorization {{ users: [ {{ nkey: {public} }} ] }}\n"),
    );
    let client = async_nats::ConnectOptions::with_nkey(seed)
        .connect(nats.url())
        .await;
    assert!(client.is_ok(), "the seed signs as {public}: {client:?}");
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    let client = async_nats::ConnectOptions::with_nkey(other)
        .connect(nats.url())
        .await;
    assert!(client.is_err(), "another user's seed is refused");
}

#[test]
fn check_warns_about_risky_grants_and_connection_rules() {
    let (_dir, config) = write_config(
        &ConfigToml::deployment()
            .section("[grants]\nkv_bucket = \"grants\"")
            .section("[jetstream]\naccount = \"DATA\"")
            .roles(
                r#"
[roles.eavesdropper]
sub.allow = ["_INBOX.>"]

[roles.private]
sub.allow = ["{{inbox}}.>", "users.{{sub}}.>"]

[roles.echo]
sub.allow = ["svc.echo"]
pub.allow = ["_INBOX.>"]
resp = {}

[roles.owner]
sub.allow = ["{{inbox}}.>"]
jetstream.manage = ["A", "B", "C", "D"]

[roles.granter]
sub.allow = ["{{inbox}}.>"]
pub.allow = ["$KV.*.>"]

[roles.worker]
sub.allow = ["{{inbox}}.>"]
jetstream.consume = ["ORDERS/worker"]

[roles.tail]
sub.allow = ["{{inbox}}.>"]
jetstream.replay = ["ORDERS"]

[roles.embedded]
pub.allow = ["x"]
connection.types = ["IN_PROCESS", "MQTT_WS"]

[roles.leaf]
pub.allow = ["x"]
connection.types = ["LEAFNODE"]

[roles.iot]
pub.allow = ["x"]
connection.types = ["MQTT", "MQTT_WS"]

[roles.deaf]
kv.read = ["config"]

[roles.profile]
sub.allow = ["{{inbox}}.>"]
kv.write = ["profiles/{{sub}}.>", "scratch"]

[roles.watcher]
sub.allow = ["{{inbox}}.>"]
kv.read = ["profiles", "config"]

[roles.editor]
pub.allow = ["$KV.config.theme"]
"#,
            ),
    );
    let out = callout_bin()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let t = output_text(&out);
    assert!(out.status.success(), "{t}");
    for expected in [
        "warning: roles.echo.pub.allow \"_INBOX.>\" reaches other users' inboxes: its users can forge replies",
        "warning: roles.eavesdropper.sub.allow \"_INBOX.>\" reaches other users' inboxes: a subscriber of _INBOX.> receives every reply",
        "warning: roles.owner.jetstream.manage [\"A\", \"B\", \"C\", \"D\"]: a stream's config reaches the whole account",
        "warning: roles.tail.jetstream.replay ORDERS: a consumer's delivery subject is set in the request body",
        "warning: roles.watcher.kv.read profiles creates consumers on KV_profiles and roles.profile.kv.write profiles/{{sub}}.> writes into it",
        "warning: roles.watcher.kv.read profiles creates consumers on KV_profiles and roles.granter.pub.allow \"$KV.*.>\" writes into it",
        "warning: roles.watcher.kv.read config creates consumers on KV_config and roles.editor.pub.allow \"$KV.config.theme\" writes into it",
        "warning: roles.granter: publishing \"$KV.*.>\" can change the grants bucket \"grants\"",
        "warning: roles.worker.jetstream.consume ORDERS/worker: roles.tail.jetstream.replay may create consumers on stream ORDERS",
        "warning: roles.embedded.connection.types lists MQTT_WS without MQTT: nats-server does not tell the two apart",
        "warning: roles.leaf.connection.types lists LEAFNODE without LEAFNODE_WS",
        "warning: roles.profile.kv.write profiles/{{sub}}.>: a put of these keys with the header Nats-Rollup: all empties the whole bucket",
        "warning: roles.deaf: jetstream and kv answer on the client's inbox, and sub.allow has no inbox",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in\n{t}");
    }
    for quiet in [
        "warning: roles.worker: ",
        "warning: roles.private",
        "warning: roles.tail: ",
        "warning: roles.watcher: ",
        "KV_scratch",
        "warning: roles.iot",
        "lists IN_PROCESS",
        "kv.write scratch",
    ] {
        assert!(!t.contains(quiet), "unexpected {quiet:?} in\n{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_whole_user_jwt_of_a_role() {
    let issuer = DevIssuer::start(0).await.unwrap();
    let (_dir, config) = write_config(
        &ConfigToml::dev(&issuer.issuer())
            .callout("auth_account", "\"AUTH\"")
            .section("[jetstream]\naccount = \"DATA\"")
            .no_roles()
            .roles(
                r#"
[roles.orders-service]
sub.allow = ["orders.requests", "{{inbox}}.>"]
resp = { max = 1, ttl = "1m" }
max_user_ttl = "15m"
limits = { subs = 100, payload = "64KiB", data = "10MiB" }
connection.types = ["STANDARD", "WEBSOCKET"]
connection.sources = ["10.0.0.0/8"]
connection.times = [{ start = "08:00:00", end = "18:00:00" }]
connection.time_zone = "Europe/Berlin"

[roles.orders-service.jetstream]
consume = ["ORDERS/worker"]

[roles.orders-service.kv]
write = ["profiles/{{name}}.>"]
"#,
            ),
    );
    let token = issuer.token("svc", AUDIENCE, &["orders-service"], 3600);
    let out = tokio::task::spawn_blocking(move || explain_stdin(&config, &token))
        .await
        .unwrap();
    let t = output_text(&out);
    println!("{t}");
    assert!(
        out.status.success(),
        "explain shows rules it cannot check: {t}"
    );
    for expected in [
        "responses: 1 per request received, within 1m",
        "limits:   subs 100, payload 65536, data 10485760 (bytes)",
        "connection (checked at connect; every role's must hold):",
        "  orders-service: types STANDARD, WEBSOCKET; from 10.0.0.0/8; at 08:00:00-18:00:00 (Europe/Berlin)",
        "(in 900s;",
        "max_user_ttl 900s from a role's max_user_ttl",
        "user JWT claims (sub is the connecting client's nkey):",
        "\"$JS.API.CONSUMER.MSG.NEXT.ORDERS.worker\"",
        "\"$KV.profiles.svc.>\"",
        "\"allowed_connection_types\": [",
        "\"times_location\": \"Europe/Berlin\"",
        "\"ttl\": 60000000000",
        "\"subs\": 100",
        "\"sub\": \"U(the connecting client's nkey)\"",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in\n{t}");
    }
}

/// `check --online` against a real deployment: each issuer's discovery
/// and keys, the NATS login, the callout subscription, and one probe
/// connect whose authorization request must open and verify with the
/// config's keys. Every broken piece is named, and fails the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_contacts_issuer_and_nats_and_names_what_is_wrong() {
    let issuer = DevIssuer::start(0).await.unwrap();
    let keys = CalloutKeys::new();
    let nats = NatsServer::start(&keys.issuer.public_key(), Some(&keys.xkey.public_key()));
    let service = CalloutService::start(
        &nats.url(),
        &issuer.issuer(),
        &keys,
        ServiceOptions {
            xkey: true,
            ..Default::default()
        },
    )
    .await;
    let dir = service.config.parent().unwrap().to_path_buf();
    let good = std::fs::read_to_string(&service.config).unwrap();
    let check = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = callout_bin()
            .args(["check", "--online", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (out.status.code(), output_text(&out))
    };
    let (code, t) = tokio::task::block_in_place(|| check("good.toml", good.clone()));
    assert_eq!(code, Some(0), "{t}");
    // The probe's refusal is what the check asks for, not an error; and
    // the report is the whole output.
    for logged in [" ERROR ", "authorization violation", " INFO "] {
        assert!(!t.contains(logged), "{logged:?} in\n{t}");
    }
    for line in [
        "ok: issuer default: discovery document",
        "ok: issuer default: JWKS has 2 usable keys",
        "ok: connected to NATS as user \"auth\" with password",
        "ok: subscribed to $SYS.REQ.USER.AUTH",
        "ok: a probe connect's authorization request (sealed) opened and verified",
        "online check: 0 errors",
    ] {
        assert!(t.contains(line), "missing {line:?} in\n{t}");
    }
    assert!(!t.contains("authpw"), "no secret shown: {t}");

    let other = nkeys::KeyPair::new_account();
    std::fs::write(dir.join("other.nk"), other.seed().unwrap()).unwrap();
    let other_xkey = nkeys::XKey::new();
    std::fs::write(dir.join("other-xkey.nk"), other_xkey.seed().unwrap()).unwrap();
    let cases = [
        (
            "no-issuer.toml",
            good.replace(&issuer.issuer(), "http://127.0.0.1:1"),
            "error: issuer default: GET http://127.0.0.1:1/.well-known/openid-configuration",
        ),
        (
            "bad-password.toml",
            good.replace("password = \"authpw\"", "password = \"wrong\""),
            "error: cannot connect to NATS at nats://127.0.0.1:",
        ),
        (
            "no-xkey.toml",
            good.replace("xkey_seed_file = \"xkey.nk\"\n", ""),
            "error: nats-server seals its authorization requests (auth_callout.xkey in nats-server's config is set) but callout.xkey_seed is not configured",
        ),
        (
            "other-xkey.toml",
            good.replace("\"xkey.nk\"", "\"other-xkey.nk\""),
            "error: nats-server seals its authorization requests to an xkey that callout.xkey_seed does not open",
        ),
        (
            "other-issuer.toml",
            good.replace("\"issuer.nk\"", "\"other.nk\""),
            "but callout.issuer_seed's public key is",
        ),
    ];
    for (name, text, expected) in cases {
        let (code, t) = tokio::task::block_in_place(|| check(name, text));
        assert_eq!(code, Some(1), "{name}: {t}");
        assert!(t.contains(expected), "{name}: missing {expected:?} in\n{t}");
        assert!(t.contains("online check: 1 error,"), "{name}: {t}");
    }
}

/// A login nats-server does not let subscribe to the callout subject
/// (here a user of the callout account with `subscribe: deny >`): the
/// service could never receive a request, and `check --online` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_names_a_login_that_cannot_subscribe_to_the_callout_subject() {
    let issuer = DevIssuer::start(0).await.unwrap();
    let keys = CalloutKeys::new();
    let port = free_port();
    let _nats = NatsServer::start_with(
        tempfile::tempdir().unwrap(),
        port,
        format!(
            r#"listen: 127.0.0.1:{port}
accounts {{
  AUTH {{ users: [ {{ user: auth, password: authpw }},
                   {{ user: limited, password: limitedpw, permissions: {{ subscribe: {{ deny: ">" }} }} }} ] }}
  APP {{}}
  SYS {{}}
}}
system_account: SYS
authorization {{
  auth_callout {{
    issuer: {}
    auth_users: [ auth, limited ]
    account: AUTH
  }}
}}
"#,
            keys.issuer.public_key()
        ),
    );
    let (_dir, config) = minimal_config(&keys, &issuer.issuer(), |c| {
        c.nats(&format!(
            "url = \"nats://127.0.0.1:{port}\"\nuser = \"limited\"\npassword = \"limitedpw\""
        ))
    });
    let out = tokio::task::block_in_place(|| {
        callout_bin()
            .args(["check", "--online", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    });
    let t = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("ok: connected to NATS as user \"limited\" with password"),
        "{t}"
    );
    assert!(
        t.contains("error: nats-server refuses this login's subscription to $SYS.REQ.USER.AUTH"),
        "{t}"
    );
    assert!(!t.contains("limitedpw"), "{t}");
}

/// `accounts` prints what nats-server needs for the grants, as the README
/// says to merge it: the block, with the callout's own accounts beside
/// it, is a config nats-server accepts (`nats-server -t`); `--format nsc`
/// prints private exports, activations and imports.
#[test]
fn accounts_prints_a_config_nats_server_accepts_and_nsc_commands() {
    let keys = CalloutKeys::new();
    let (dir, config) = minimal_config(&keys, "https://idp.example.com", |c| {
        c.callout("auth_account", "\"AUTH\"")
            .no_roles()
            .roles(fixtures::GRANT_ROLES)
    });
    let out = callout_bin()
        .args(["accounts", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let block = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", output_text(&out));
    for expected in [
        "{ service: \"$JS.API.>\", accounts: [APP], response_type: stream }",
        "{ service: \"$JS.ACK.ORDERS.worker.*.*.*.*.*\", accounts: [APP], response_type: stream }",
        "{ service: \"$KV.profiles.*.>\", accounts: [APP] }",
        "{ service: \"orders.>\", accounts: [APP] }",
        "{ stream: \"_INBOX.>\", accounts: [APP] }",
        "jetstream: disabled",
        "{ service: { account: DATA, subject: \"$JS.API.>\" } }",
    ] {
        assert!(block.contains(expected), "missing {expected:?} in\n{block}");
    }
    // Merged as the README says: the users and the callout beside it.
    let merged = block
        .replace(
            "accounts {",
            "accounts {\n  AUTH { users: [ { user: auth, password: authpw } ] }\n  SYS {}",
        )
        .replace(
            "    # users: [ ... ]   # administrators only: never users of the callout\n",
            "    users: [ { user: admin, password: admin } ]\n",
        );
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:-1\njetstream {{ store_dir: \"{}\" }}\n{merged}\nsystem_account: SYS\nauthorization {{ auth_callout {{ issuer: {}, auth_users: [ auth ], account: AUTH }} }}\n",
            dir.path().join("js").display(),
            keys.issuer.public_key()
        ),
    )
    .unwrap();
    let checked = std::process::Command::new(nats_server_bin())
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "nats-server refuses the merged config: {}\n{merged}",
        output_text(&checked)
    );

    let out = callout_bin()
        .args(["accounts", "--format", "nsc", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let nsc = String::from_utf8_lossy(&out.stdout).to_string();
    for expected in [
        "nsc edit account --name DATA --js-enable 0",
        "nsc add export --account DATA --private --service --response-type Stream --subject '$JS.API.>'",
        "nsc add export --account DATA --private --subject '_INBOX.>'",
        "nsc generate activation --account DATA --subject '$JS.API.>' --target-account APP --output-file activation-",
        "nsc add import --account APP --token activation-",
    ] {
        assert!(nsc.contains(expected), "missing {expected:?} in\n{nsc}");
    }
}

/// `try` as a user runs it: the token in $NATS_PASSWORD (and, to an
/// operator-mode server, the sentinel's --creds); stdout and exit status.
fn try_as(url: &str, token: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut command = callout_bin();
    command
        .args(["try", "--server", url, "--user", "rita"])
        .env("NATS_PASSWORD", token);
    if let Some(creds) = sentinel_for(url) {
        command.arg("--creds").arg(creds);
    }
    let out = command.args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !output_text(&out).contains(token),
        "the token is never printed"
    );
    (
        out.status.code(),
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_prints_nats_servers_verdict_for_each_publish_and_subscription() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let (url, token) = (stack.url(), stack.token("rita", &["reader", "writer"]));
    let (code, said) = tokio::task::block_in_place(|| {
        try_as(
            &url,
            &token,
            &[
                "--sub",
                "orders.>",
                "--sub",
                "orders.secret.plans",
                "--pub",
                "orders.new",
                "--pub",
                "orders.audit",
            ],
        )
    });
    assert_eq!(code, Some(1), "a denial fails the run:\n{said}");
    for line in [
        format!("connect {url}: admitted by nats-server "),
        "sub orders.>: allowed".to_string(),
        "sub orders.secret.plans: DENIED by nats-server: Permissions Violation for Subscription to \"orders.secret.plans\"".to_string(),
        "pub orders.new: allowed".to_string(),
        "pub orders.audit: DENIED by nats-server: Permissions Violation for Publish to \"orders.audit\"".to_string(),
    ] {
        assert!(said.lines().any(|l| l.starts_with(&line)), "no {line:?} in\n{said}");
    }

    // Everything allowed: exit 0.
    let (code, said) = tokio::task::block_in_place(|| {
        try_as(
            &url,
            &token,
            &["--sub", "orders.new", "--pub", "orders.new"],
        )
    });
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("sub orders.new: allowed") && said.contains("pub orders.new: allowed"),
        "{said}"
    );

    // A subject that would rewrite the terminal is shown escaped, and
    // nats-server's words about it too.
    let hostile = "x.\u{202e}y";
    let (code, said) = tokio::task::block_in_place(|| try_as(&url, &token, &["--sub", hostile]));
    assert_eq!(code, Some(1), "{said}");
    assert!(!said.contains('\u{202e}'), "{said:?}");
    assert!(
        said.contains("sub x.\\u{202e}y: DENIED by nats-server"),
        "{said}"
    );
    // One nats-server would not take is refused before connecting.
    let (code, said) =
        tokio::task::block_in_place(|| try_as(&url, &token, &["--pub", "orders.\u{1b}[2J"]));
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(
            "error: --pub orders.\\u{1b}[2J: a subject cannot hold spaces or control characters"
        ),
        "{said:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_shows_a_refused_connect_and_an_unreachable_server() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let url = stack.url();
    let unmapped = stack.token("gus", &["guest"]);
    let (code, said) =
        tokio::task::block_in_place(|| try_as(&url, &unmapped, &["--sub", "orders.>"]));
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "connect {url}: REFUSED by nats-server: authorization violation"
        )),
        "{said}"
    );
    assert!(
        !said.contains("sub orders.>"),
        "nothing is tried after a refusal: {said}"
    );

    let dead = format!("nats://127.0.0.1:{}", free_port());
    let (code, said) = tokio::task::block_in_place(|| try_as(&dead, &unmapped, &[]));
    assert_eq!(code, Some(3), "{said}");
    assert!(
        said.contains(&format!("connect {dead}: NO VERDICT: ")),
        "{said}"
    );

    let out = callout_bin()
        .args(["try", "--server", &url, "--password", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        output_text(&out).contains("--password needs --user"),
        "{}",
        output_text(&out)
    );
}

/// `--config` is a global flag, but only the commands that read a config
/// file take it: the others (`dev` writes its own) refuse it instead of
/// ignoring it, and say what to do.
#[test]
fn commands_that_read_no_config_refuse_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mine.toml");
    std::fs::write(&config, "").unwrap();
    let refused = |args: &[&str]| {
        let out = callout_bin()
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            output_text(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", output_text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = refused(&["dev"]);
    assert!(
        said.contains(&format!(
            "--config {}: dev reads no config file",
            config.display()
        )) && said.contains("nats-oidc-callout run --config FILE"),
        "{said}"
    );
    assert!(
        !said.contains("DEVELOPMENT MODE"),
        "dev did not start: {said}"
    );
    for args in [
        &["keygen", "account"][..],
        &["pubkey", "x.nk"],
        &["dev-issuer"],
    ] {
        let said = refused(args);
        assert!(said.contains("reads no config file"), "{args:?}: {said}");
    }
    let said = refused(&["token"]);
    assert!(said.contains("--client-config"), "{said}");
}
