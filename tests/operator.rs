//! Operator mode through a real nats-server: an operator, accounts as JWTs
//! in a memory resolver, the callout switched on in the callout account's
//! JWT, clients that present the sentinel plus their token. (The permission,
//! token and lifecycle suites also run whole in this mode, with
//! `NATS_OIDC_CALLOUT_TEST_MODE=operator`; see .ci/run.)

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use futures::StreamExt;
use serde_json::Value;

const ROLES: &str = r#"
[roles.reader]
pub.allow = ["_INBOX.>", "$SYS.REQ.USER.INFO"]
sub.allow = ["orders.>", "_INBOX.>"]

[roles.writer]
pub.allow = ["orders.>", "_INBOX.>"]
sub.allow = ["_INBOX.>"]

[roles.team]
account = "TEAM"
pub.allow = ["orders.>", "_INBOX.>", "$SYS.REQ.USER.INFO"]
sub.allow = ["orders.>", "_INBOX.>"]
"#;

async fn stack(xkey: bool) -> Stack {
    Stack::start(ServiceOptions {
        operator: true,
        xkey,
        roles: ROLES.into(),
        ..Default::default()
    })
    .await
}

/// The account a connection was placed in, as nats-server tells it.
async fn account_of(client: &async_nats::Client) -> String {
    let info = client
        .request("$SYS.REQ.USER.INFO", "".into())
        .await
        .expect("user info");
    let v: Value = serde_json::from_slice(&info.payload).unwrap();
    v["data"]["account"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_get_in_through_the_sentinel_into_their_roles_account_and_no_other() {
    for xkey in [false, true] {
        let stack = stack(xkey).await;
        let setup = stack.operator.as_ref().unwrap();
        let app = setup.target("APP").unwrap().public_key();
        let team = setup.target("TEAM").unwrap().public_key();
        let rita = connect(&stack.url(), &stack.token("rita", &["reader"]))
            .await
            .expect("a reader through the sentinel");
        let walt = connect(&stack.url(), &stack.token("walt", &["writer"]))
            .await
            .unwrap();
        let tim = connect(&stack.url(), &stack.token("tim", &["team"]))
            .await
            .unwrap();
        assert_eq!(account_of(&rita.client).await, app, "xkey {xkey}");
        assert_eq!(account_of(&tim.client).await, team);
        // Exactly the role's permissions.
        assert!(delivered(&walt.client, &rita.client, "orders.new").await);
        assert!(not_delivered(&rita.client, &walt.client, "orders.new").await);
        // Two accounts are two worlds.
        assert!(not_delivered(&walt.client, &tim.client, "orders.new").await);
        assert!(not_delivered(&tim.client, &rita.client, "orders.new").await);
        let log = stack.service.log_text();
        assert!(
            log.contains("user=tim") && log.contains("account=TEAM"),
            "{log}"
        );
        assert_refused(&stack.url(), &stack.token("gus", &["guest"]), "unmapped").await;
    }
}

/// A client without the sentinel never reaches the callout: nats-server
/// wants a user JWT in operator mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_sentinel_is_refused_before_the_callout() {
    let stack = stack(false).await;
    let token = stack.token("rita", &["reader"]);
    let attempt = async_nats::ConnectOptions::with_user_and_password("rita".into(), token)
        .connect(stack.url())
        .await;
    assert!(attempt.is_err(), "admitted without the sentinel");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stack.service.log_text().contains("result=\"allowed\""),
        "the callout saw it"
    );
}

/// The user JWT is signed by the target account's signing key and names
/// the account in `issuer_account`; the response is signed by the callout
/// account's signing key for that account. Read off the wire by a second
/// client of the callout's own user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_jwts_are_signed_by_the_accounts_signing_key_and_name_their_account() {
    let stack = stack(false).await;
    let setup = stack.operator.as_ref().unwrap();
    let app = setup.target("APP").unwrap();
    let spy_creds = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(spy_creds.path(), setup.service_creds()).unwrap();
    let spy = async_nats::ConnectOptions::with_credentials_file(spy_creds.path())
        .await
        .unwrap()
        .connect(stack.url())
        .await
        .expect("the callout's own user");
    // nats-server sends callout requests with replies to its own inbox.
    let mut answers = spy.subscribe("$SYS._INBOX.>").await.unwrap();
    spy.flush().await.unwrap();
    connect(&stack.url(), &stack.token("rita", &["reader"]))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), answers.next())
        .await
        .expect("an answer on the wire")
        .unwrap();
    let response = claims_of(std::str::from_utf8(&answer.payload).unwrap());
    assert_eq!(response["iss"], setup.auth.signing.public_key());
    assert_eq!(response["nats"]["issuer_account"], setup.auth.public_key());
    let user = claims_of(response["nats"]["jwt"].as_str().unwrap());
    assert_eq!(user["iss"], app.signing.public_key());
    assert_eq!(user["nats"]["issuer_account"], app.public_key());
    assert!(
        user.get("aud").is_none(),
        "operator mode places by the signer"
    );
    assert_eq!(user["name"], "rita");
}

/// A signing key the account does not list is refused by nats-server: the
/// service signs only with the keys it is configured with, so `check` and
/// the account JWT must agree (shown here with a key APP does not list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_jwt_signed_by_a_key_the_account_does_not_list_is_refused_by_the_server() {
    let stack = stack(false).await;
    // Give TEAM's seed file a key TEAM's account JWT does not list, reload.
    let config = std::fs::read_to_string(&stack.service.config).unwrap();
    let team_seed = config
        .split("[callout.accounts.TEAM]")
        .nth(1)
        .and_then(|t| t.lines().find(|l| l.starts_with("signing_key_seed_file")))
        .and_then(|l| l.split('"').nth(1))
        .expect("TEAM's seed file")
        .to_string();
    std::fs::write(&team_seed, nkeys::KeyPair::new_account().seed().unwrap()).unwrap();
    stack.service.signal("HUP");
    wait_for_log(
        &stack.service.log,
        "config reloaded",
        Duration::from_secs(5),
    )
    .await;
    assert_refused(&stack.url(), &stack.token("tim", &["team"]), "unlisted key").await;
    wait_for_log(&stack.nats.log, "is not known", Duration::from_secs(5)).await;
    connect(&stack.url(), &stack.token("rita", &["reader"]))
        .await
        .expect("APP's listed key still works");
}

/// `sentinel` writes credentials, mode 0600, that get a client to the
/// callout; in server mode it says there is no such thing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_command_writes_working_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let stack = stack(true).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sentinel.creds");
    let made = callout_bin()
        .args(["sentinel", "--config"])
        .arg(&stack.service.config)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", output_text(&made));
    // The command it prints for clients, as the nats CLI reads it, gets a
    // token in through the sentinel.
    let said = String::from_utf8_lossy(&made.stderr).into_owned();
    let hint = said
        .lines()
        .find_map(|l| l.strip_prefix("clients: "))
        .unwrap_or_else(|| panic!("no command for clients in {said}"));
    let command = hint.split(" ...").next().unwrap().to_string();
    assert!(command.starts_with("nats --creds "), "{hint}");
    let token = stack.token("rita", &["reader"]);
    let mut context = nats_cli_context(&command, &[("TOKEN", &token)]);
    context["url"] = stack.url().into();
    connect_as_nats_cli(&context)
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = callout_bin()
        .args(["sentinel", "--config"])
        .arg(&stack.service.config)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "never overwrites");
    let client = async_nats::ConnectOptions::with_credentials_file(&out)
        .await
        .unwrap()
        .user_and_password("rita".into(), stack.token("rita", &["reader"]))
        .connect(stack.url())
        .await
        .expect("the command's sentinel gets a token in");
    let _ = client;
    let text = std::fs::read_to_string(&out).unwrap();
    let jwt = nats_oidc_client::creds::user_jwt(&text).unwrap();
    let claims = claims_of(jwt);
    assert_eq!(claims["nats"]["bearer_token"], true);
    assert_eq!(claims["nats"]["pub"]["deny"][0], ">");
    assert_eq!(claims["nats"]["sub"]["deny"][0], ">");
}

/// `explain` names the account's public key and the key that signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_account_key_and_the_signer() {
    let stack = stack(false).await;
    let setup = stack.operator.as_ref().unwrap();
    let team = setup.target("TEAM").unwrap();
    let config = stack.service.config.clone();
    let token = stack.token("tim", &["team"]);
    let out = tokio::task::spawn_blocking(move || explain_stdin(&config, &token))
        .await
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("account:  TEAM"), "{text}");
    assert!(
        text.contains(&format!("public key {}", team.public_key())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "user JWT signed by {} (a signing key)",
            team.signing.public_key()
        )),
        "{text}"
    );
}
