//! `revoke`: how long one back-channel logout takes to close a person's
//! connections.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nats_oidc_callout::dev::DevIssuer;

use crate::procs::free_port;
use crate::Ctx;

pub async fn run(ctx: &Ctx, clients: usize) {
    let Ctx { issuer, .. } = ctx;
    let nats = ctx.callout_nats(true);
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let backchannel = free_port();
    let revocation = format!(
        "[revocation]\nkv_bucket = \"revocations\"\nsystem_user = \"sys\"\nsystem_password = \"sys\"\nbackchannel_listen = \"127.0.0.1:{backchannel}\""
    );
    let start = || ctx.start(nats.port, &revocation);
    println!("revoke: {clients} connections of one person, {clients} of another");
    let (service, _) = start().await;
    revoke_round(
        "remembered by the replica",
        issuer,
        &url,
        clients,
        backchannel,
    )
    .await;
    // A second round on connections filed before a restart: only
    // the session registry knows them then. Tokens of the first
    // round's second are covered; wait for the next one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let held = connect_victims(issuer, &url, clients, "r2").await;
    // The registry is written behind the answers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(service);
    let (_service, _) = start().await;
    revoke_held(
        "in the session registry only (after a restart)",
        issuer,
        held,
        backchannel,
    )
    .await;
}

/// (`user-bystander`), each noting when it was first disconnected.
struct Held {
    victims: Vec<(async_nats::Client, Arc<Mutex<Option<Instant>>>)>,
    bystanders: Vec<(async_nats::Client, Arc<Mutex<Option<Instant>>>)>,
}

async fn connect_one(
    url: &str,
    token: String,
) -> (async_nats::Client, Arc<Mutex<Option<Instant>>>) {
    let closed: Arc<Mutex<Option<Instant>>> = Arc::default();
    let noted = closed.clone();
    let client = async_nats::ConnectOptions::with_user_and_password("load".into(), token)
        .connection_timeout(Duration::from_secs(10))
        .event_callback(move |event| {
            let noted = noted.clone();
            async move {
                if matches!(event, async_nats::Event::Disconnected) {
                    noted.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
        })
        .connect(url)
        .await
        .expect("a load client connects");
    (client, closed)
}

async fn connect_victims(issuer: &DevIssuer, url: &str, clients: usize, round: &str) -> Held {
    let token = |user: &str, i: usize| {
        issuer.token_with_sid(
            user,
            "nats",
            &["reader"],
            3600,
            &format!("{round}-{user}-{i}"),
        )
    };
    let mut held = Held {
        victims: Vec::new(),
        bystanders: Vec::new(),
    };
    for chunk in (0..clients).collect::<Vec<_>>().chunks(100) {
        let victims = chunk.iter().map(|&i| connect_one(url, token("victim", i)));
        let bystanders = chunk
            .iter()
            .map(|&i| connect_one(url, token("bystander", i)));
        held.victims
            .extend(futures::future::join_all(victims).await);
        held.bystanders
            .extend(futures::future::join_all(bystanders).await);
    }
    held
}

async fn revoke_round(what: &str, issuer: &DevIssuer, url: &str, clients: usize, backchannel: u16) {
    let held = connect_victims(issuer, url, clients, "r1").await;
    revoke_held(what, issuer, held, backchannel).await;
}

/// Logs `user-victim` out and reports how long until each of its
/// connections was closed.
async fn revoke_held(what: &str, issuer: &DevIssuer, held: Held, backchannel: u16) {
    let logout = issuer.logout_token(Some("user-victim"), None, "nats");
    let begin = Instant::now();
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{backchannel}/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={logout}"))
        .send()
        .await
        .expect("the back-channel endpoint answers");
    assert_eq!(answer.status(), 200, "the logout is accepted");
    let accepted = begin.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    let closed_at = |h: &[(async_nats::Client, Arc<Mutex<Option<Instant>>>)]| -> Vec<Instant> {
        h.iter().filter_map(|(_, c)| *c.lock().unwrap()).collect()
    };
    while closed_at(&held.victims).len() < held.victims.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut took: Vec<f64> = closed_at(&held.victims)
        .iter()
        .map(|t| t.saturating_duration_since(begin).as_secs_f64() * 1000.0)
        .collect();
    took.sort_by(f64::total_cmp);
    // The other person's connections get a second more to be closed by
    // mistake before they are counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bystanders_closed = closed_at(&held.bystanders).len();
    println!(
        "revoke ({what}): logout accepted in {:.0} ms; {}/{} connections closed, median {:.0} ms, last {:.0} ms after the logout was sent; {bystanders_closed}/{} of the other person's closed",
        accepted.as_secs_f64() * 1000.0,
        took.len(),
        held.victims.len(),
        took.get(took.len() / 2).copied().unwrap_or(f64::NAN),
        took.last().copied().unwrap_or(f64::NAN),
        held.bystanders.len(),
    );
}
