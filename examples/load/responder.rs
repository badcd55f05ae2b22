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
    /// When not empty, a token naming another `kid` is refused: the least a
    /// responder holding these keys must do with a made-up kid (it never
    /// refetches: its keys do not change during a run).
    pub known_kids: Vec<String>,
    /// `[users.*]` names and their bcrypt hashes: a connect under one of
    /// these names is decided by its password alone, as the service does.
    pub users: Vec<(String, String)>,
}

/// What the responder needs to answer, shared with the tasks that check
/// passwords.
struct Answering {
    client: async_nats::Client,
    issuer: nats_oidc_callout::nats::SigningKey,
    issuer_public: String,
    ours: Option<nats_oidc_callout::nats::OurXkey>,
}

impl Answering {
    /// An allow-all user JWT for `user_nkey`.
    fn user_jwt(&self, user_nkey: &str, now: u64) -> String {
        use nats_oidc_callout::nats::{
            issue_user_jwt, ConnectionLimits, Permission, Placement, UserGrant, UserLimits,
        };
        let everything = Permission {
            allow: vec![">".into()],
            deny: Vec::new(),
        };
        issue_user_jwt(
            &UserGrant {
                user_nkey,
                name: "null",
                placement: Placement::Named("APP"),
                publish: &everything,
                subscribe: &everything,
                resp: None,
                limits: UserLimits::default(),
                connection: &ConnectionLimits::default(),
                expires: now + 3600,
            },
            &self.issuer,
            now,
        )
    }
}

/// Publishes the answer to a request: `$answering`'s allow-all user JWT
/// for `$to` when `$verdict` is `Ok`, else its reason as a refusal
/// (sealed to `$server_xkey` when there is one).
macro_rules! answer {
    ($answering:expr, $reply:expr, $to:expr, $server_xkey:expr, $verdict:expr) => {{
        use nats_oidc_callout::nats::{build_response, Answer, Signer};
        let answering = &$answering;
        let now = unix_now();
        let to = $to;
        let user;
        let answer = match $verdict {
            Ok(()) => {
                user = answering.user_jwt(&to.user_nkey, now);
                Answer::Allow { user_jwt: &user }
            }
            Err(error) => Answer::Deny { error },
        };
        let body = build_response(
            to,
            answer,
            &Signer {
                key: &answering.issuer,
                account: &answering.issuer_public,
            },
            answering.ours.as_ref().zip($server_xkey),
            now,
        );
        let _ = answering.client.publish($reply, body.into()).await;
    }};
}

/// bcrypt checks bounded as the service bounds its own (see the README's
/// `[users.*]` section): on at most one thread per core, at most 2 per
/// core admitted (running or waiting) for one name and 16 per core in
/// all; a check beyond that is refused at once.
struct Passwords {
    threads: tokio::sync::Semaphore,
    admitted: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    per_name: usize,
    total: usize,
}

impl Passwords {
    fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Passwords {
            threads: tokio::sync::Semaphore::new(cores),
            admitted: Default::default(),
            per_name: 2 * cores,
            total: (16 * cores).min(256),
        }
    }

    /// Whether `password` is `name`'s; `Err` when refused unchecked.
    async fn check(&self, name: &str, hash: &str, password: &str) -> Result<bool, &'static str> {
        {
            let mut admitted = self.admitted.lock().unwrap();
            let all: usize = admitted.values().sum();
            let for_name = admitted.entry(name.to_string()).or_default();
            if *for_name >= self.per_name || all >= self.total {
                return Err("too many password checks under way");
            }
            *for_name += 1;
        }
        let ok = {
            let _thread = self.threads.acquire().await.expect("never closed");
            let (hash, password) = (hash.to_string(), password.to_string());
            tokio::task::spawn_blocking(move || bcrypt::non_truncating_verify(password, &hash))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(false)
        };
        *self
            .admitted
            .lock()
            .unwrap()
            .get_mut(name)
            .expect("admitted") -= 1;
        Ok(ok)
    }
}

/// The `kid` of a compact JWS's header, if it names one.
fn kid_of(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Header {
        kid: Option<String>,
    }
    serde_json::from_slice::<Header>(&bytes).ok()?.kid
}

pub async fn null_responder(nats_port: u16, seed: &str, xkey_seed: Option<&str>, checks: Checks) {
    use futures::StreamExt;
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
    let answering = std::sync::Arc::new(Answering {
        client,
        issuer,
        issuer_public,
        ours,
    });
    let passwords = std::sync::Arc::new(Passwords::new());
    println!("ready");
    while let Some(msg) = requests.next().await {
        let Some(reply) = msg.reply else { continue };
        let header = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Server-Xkey"))
            .map(|v| v.as_str());
        let Ok(opened) =
            nats_oidc_callout::nats::open_request(&msg.payload, header, answering.ours.as_ref())
        else {
            continue;
        };
        let now = unix_now();
        let server_xkey = opened.server_xkey().cloned();
        if !checks.requests {
            let to = opened.addressee_unverified();
            answer!(
                answering,
                reply,
                &to,
                server_xkey.as_ref(),
                Ok::<(), &str>(())
            );
            continue;
        }
        let Ok(request) = opened.verify(&answering.issuer_public, now as i64) else {
            continue;
        };
        let to = request.claims.addressee();
        let opts = &request.claims.nats.connect_opts;
        let user = opts
            .user
            .as_deref()
            .and_then(|u| checks.users.iter().find(|(name, _)| name == u));
        if let Some((name, hash)) = user {
            // bcrypt takes milliseconds: in a task, so that no other
            // request waits for it.
            let (answering, passwords) = (answering.clone(), passwords.clone());
            let (name, hash, password) = (
                name.clone(),
                hash.clone(),
                opts.pass.clone().unwrap_or_default(),
            );
            tokio::spawn(async move {
                let verdict = match passwords.check(&name, &hash, &password).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("wrong password"),
                    Err(busy) => Err(busy),
                };
                answer!(answering, reply, &to, server_xkey.as_ref(), verdict);
            });
            continue;
        }
        let verdict = check_token(&checks, opts.bearer_token());
        answer!(answering, reply, &to, server_xkey.as_ref(), verdict);
    }
}

/// The token checks `checks` asks for: its kid among the known ones, its
/// RS256 signature.
fn check_token(checks: &Checks, token: Option<&str>) -> Result<(), &'static str> {
    let token = token.ok_or("no token")?;
    if !checks.known_kids.is_empty() {
        let kid = kid_of(token).ok_or("no kid")?;
        if !checks.known_kids.contains(&kid) {
            return Err("unknown kid");
        }
    }
    if let Some(key) = &checks.token_key {
        let (signed, signature) = token.rsplit_once('.').ok_or("not a JWS")?;
        let good = jsonwebtoken::crypto::verify(
            signature,
            signed.as_bytes(),
            key,
            jsonwebtoken::Algorithm::RS256,
        );
        if !matches!(good, Ok(true)) {
            return Err("bad signature");
        }
    }
    Ok(())
}

/// What the checking responder is started with (see `Checks`).
#[derive(Default)]
pub struct Checking<'a> {
    /// The issuer's RS256 key, when every token's signature is verified.
    pub token_jwk: Option<&'a serde_json::Value>,
    pub known_kids: &'a [String],
    pub users: &'a [(String, String)],
}

pub fn start_null_responder(
    nats_port: u16,
    account: &nkeys::KeyPair,
    xkey: Option<&nkeys::XKey>,
    checking: Option<Checking<'_>>,
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
    if let Some(checking) = checking {
        cmd.arg("--verify-requests");
        if let Some(jwk) = checking.token_jwk {
            cmd.arg("--token-jwk").arg(jwk.to_string());
        }
        for kid in checking.known_kids {
            cmd.arg("--known-kid").arg(kid);
        }
        for (name, hash) in checking.users {
            cmd.arg("--user").arg(format!("{name}={hash}"));
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
