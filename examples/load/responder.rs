//! The reference responders: a null responder (answers allow-all, checks
//! nothing) and a checking responder (the same, verifying the request and
//! the token's signature: the crypto every decision must do).

use std::process::{Command, Stdio};

use nats_oidc_callout::unix_now;

use crate::procs::Service;

/// What the null responder checks.

#[derive(Clone, Default)]
pub struct Checks {
    pub requests: bool,
    pub token_key: Option<jsonwebtoken::DecodingKey>,
}

pub async fn null_responder(nats_port: u16, seed: &str, xkey_seed: Option<&str>, checks: Checks) {
    use futures::StreamExt;
    use nats_oidc_callout::nats::{
        build_response, issue_user_jwt, Answer, ConnectionLimits, Permission, Placement, Signer,
        UserGrant, UserLimits,
    };
    let issuer = nats_oidc_callout::nats::SigningKey::new(
        nkeys::KeyPair::from_seed(seed).expect("an account seed"),
    )
    .expect("a key pair with its seed");
    let issuer_public = issuer.public_key().to_string();
    let ours = xkey_seed.map(|s| {
        nats_oidc_callout::nats::OurXkey::new(nkeys::XKey::from_seed(s).expect("an xkey seed"))
            .expect("an xkey with its seed")
    });
    let client = async_nats::ConnectOptions::with_user_and_password("auth".into(), "authpw".into())
        .connect(format!("nats://127.0.0.1:{nats_port}"))
        .await
        .expect("the null responder connects");
    let mut requests = client
        .queue_subscribe("$SYS.REQ.USER.AUTH", "null".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let everything = Permission {
        allow: vec![">".into()],
        deny: Vec::new(),
    };
    let anywhere = ConnectionLimits::default();
    println!("ready");
    while let Some(msg) = requests.next().await {
        let Some(reply) = msg.reply else { continue };
        let header = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Server-Xkey"))
            .map(|v| v.as_str());
        let Ok(opened) = nats_oidc_callout::nats::open_request(&msg.payload, header, ours.as_ref())
        else {
            continue;
        };
        let now = unix_now();
        let server_xkey = opened.server_xkey().cloned();
        let to = if checks.requests {
            let Ok(request) = opened.verify(&issuer_public, now as i64) else {
                continue;
            };
            if let Some(key) = &checks.token_key {
                let Some((signed, signature)) = request
                    .claims
                    .nats
                    .connect_opts
                    .bearer_token()
                    .and_then(|t| t.rsplit_once('.'))
                else {
                    continue;
                };
                let good = jsonwebtoken::crypto::verify(
                    signature,
                    signed.as_bytes(),
                    key,
                    jsonwebtoken::Algorithm::RS256,
                );
                if !matches!(good, Ok(true)) {
                    continue;
                }
            }
            request.claims.addressee()
        } else {
            opened.addressee_unverified()
        };
        let user = issue_user_jwt(
            &UserGrant {
                user_nkey: &to.user_nkey,
                name: "null",
                placement: Placement::Named("APP"),
                publish: &everything,
                subscribe: &everything,
                resp: None,
                limits: UserLimits::default(),
                connection: &anywhere,
                expires: now + 3600,
            },
            &issuer,
            now,
        );
        let seal = ours.as_ref().zip(server_xkey.as_ref());
        let body = build_response(
            &to,
            Answer::Allow { user_jwt: &user },
            &Signer {
                key: &issuer,
                account: &issuer_public,
            },
            seal,
            now,
        );
        let _ = client.publish(reply, body.into()).await;
    }
}

pub fn start_null_responder(
    nats_port: u16,
    account: &nkeys::KeyPair,
    xkey: Option<&nkeys::XKey>,
    checking: Option<Option<&serde_json::Value>>,
) -> Service {
    use std::io::BufRead;
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("null-responder")
        .arg("--nats-port")
        .arg(nats_port.to_string())
        .arg("--seed")
        .arg(account.seed().unwrap());
    if let Some(x) = xkey {
        cmd.arg("--xkey-seed").arg(x.seed().unwrap());
    }
    if let Some(token_jwk) = checking {
        cmd.arg("--verify-requests");
        if let Some(jwk) = token_jwk {
            cmd.arg("--token-jwk").arg(jwk.to_string());
        }
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the null responder");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the null responder did not start");
    Service {
        child,
        _dir: tempfile::tempdir().unwrap(),
        http_port: None,
    }
}
