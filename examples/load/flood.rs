//! `flood`: people log in at a steady rate while a flood of bad logins
//! runs beside them, answered by the service and then, under the same
//! flood, by the checking responder.
//!
//! Real logins: `--rate` per second (open loop), each with a valid token
//! of its own, connected once before the row starts (tokens seen before).
//! The flood: `--flood` clients connecting in a loop, each connect either
//! a wrong password for one `[users.*]` name (`svc-flood`, a bcrypt hash
//! of cost 11, `hash-password`'s default) or a token naming a kid the
//! issuer never published (a valid payload, the header's kid made up,
//! the signature another token's). Rows: no flood (the control), wrong
//! passwords, made-up kids; each for the service, then for the checking
//! responder. Per row: the share of real logins admitted, their p50/p99
//! connect time, the flood's rate and the responder's CPU; per kind of
//! flood, service ÷ checking responder.
//!
//! The checking responder refuses the flood as the least a secure
//! responder must: a wrong password costs a bcrypt check of the same hash,
//! bounded as the service bounds its own (one thread per core, at most 2
//! per core admitted for one name, 16 per core in all, the rest refused
//! at once unchecked); a made-up kid costs a look at the token's header
//! (kid not among its keys: refused; it never refetches, where the service
//! refetches at most once per `jwks_refetch_cooldown`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::procs::Service;
use crate::responder::{start_null_responder, Checking};
use crate::tally::{
    closed_loop, connect_once, counts, logged_codes, ConnectSummary, Connects, Credentials,
};
use crate::Ctx;

/// The `[users.*]` name the wrong passwords are aimed at.
const FLOOD_USER: &str = "svc-flood";
/// `hash-password`'s default cost.
const BCRYPT_COST: u32 = 11;
/// Distinct made-up kids, cycled through.
const MADE_UP: usize = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Flood {
    None,
    Passwords,
    Kids,
}

impl Flood {
    fn name(self) -> &'static str {
        match self {
            Flood::None => "no flood",
            Flood::Passwords => "wrong passwords",
            Flood::Kids => "made-up kids",
        }
    }
}

/// One row: what the real logins and the flood came to, and the
/// responder's CPU seconds.
struct Row {
    real: ConnectSummary,
    flood: ConnectSummary,
    cpu: f64,
    /// The refusals the service logged (none for the checking responder,
    /// which logs nothing).
    logged: BTreeMap<String, u64>,
}

pub async fn run(ctx: &Ctx, rate: u64, flood: usize, duration: Duration) {
    let Ctx {
        account,
        tokens,
        token_jwk,
        issuer,
        ..
    } = ctx;
    let nats = ctx.callout_nats(false);
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let hash = bcrypt::hash(nuid::next().to_string(), BCRYPT_COST).unwrap();
    let users = [(FLOOD_USER.to_string(), hash.clone())];
    let user_table =
        format!("[users.{FLOOD_USER}]\npassword_bcrypt = \"{hash}\"\nroles = [\"reader\"]");
    let kid = issuer.current_kid(jsonwebtoken::Algorithm::RS256);
    let made_up = Arc::new(made_up_kids(&tokens[0]));
    let logins = ((rate as f64 * duration.as_secs_f64()) as usize).clamp(1, tokens.len());
    println!(
        "flood: {rate} real logins/s for {:.0}s per row beside {flood} flood clients; {}, token cache {}; real logins use {logins} distinct tokens, each connected once before the row",
        duration.as_secs_f64(),
        if ctx.xkey_on { "xkey" } else { "no xkey" },
        if ctx.no_token_cache { "off" } else { "on" },
    );
    for kind in [Flood::None, Flood::Passwords, Flood::Kids] {
        let credentials: Credentials = match kind {
            Flood::None | Flood::Passwords => {
                Arc::new(|n| (FLOOD_USER.into(), format!("wrong-{n}")))
            }
            Flood::Kids => {
                let made_up = made_up.clone();
                Arc::new(move |n| ("load".into(), made_up[n as usize % made_up.len()].clone()))
            }
        };
        let flood = if kind == Flood::None { 0 } else { flood };
        let row = |responder| {
            measure(
                &url,
                tokens,
                logins,
                rate,
                duration,
                flood,
                credentials.clone(),
                responder,
            )
        };
        let (service, _) = ctx.start(nats.port, &user_table).await;
        let s = row(service).await;
        let checking = start_null_responder(
            nats.port,
            account,
            ctx.xkey(),
            Some(Checking {
                token_jwk: ctx.no_token_cache.then_some(token_jwk),
                known_kids: std::slice::from_ref(&kid),
                users: &users,
            }),
        );
        let c = row(checking).await;
        print_row(kind, "service", &s, duration);
        print_row(kind, "checking", &c, duration);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        println!(
            "  {}: service ÷ checking: real logins admitted {:.2}×, p50 {:.2}×, p99 {:.2}×, flood rate {:.2}×, CPU per answer {:.2}×",
            kind.name(),
            ratio(s.real.share_admitted(), c.real.share_admitted()),
            ratio(s.real.admitted_ms.0, c.real.admitted_ms.0),
            ratio(s.real.admitted_ms.1, c.real.admitted_ms.1),
            ratio(s.flood.rate, c.flood.rate),
            ratio(s.cpu_per_answer(), c.cpu_per_answer()),
        );
    }
}

impl Row {
    /// CPU µs per connect answered, real logins and flood together.
    fn cpu_per_answer(&self) -> f64 {
        self.cpu * 1e6 / (self.real.attempts + self.flood.attempts).max(1) as f64
    }
}

fn print_row(kind: Flood, who: &str, row: &Row, duration: Duration) {
    let Row {
        real,
        flood,
        cpu,
        logged,
    } = row;
    let flood_text = if flood.attempts == 0 {
        String::new()
    } else {
        format!(
            "; flood {:.0}/s ({} admitted, refused p50 {:.1} ms, p99 {:.1} ms, {} at nats-server's timeout)",
            flood.rate, flood.admitted, flood.refused_ms.0, flood.refused_ms.1, flood.timed_out
        )
    };
    println!(
        "{:<16} {who:<9} real logins {:.1}% admitted ({} of {}), p50 {:.1} ms, p99 {:.1} ms, refused: {}{flood_text}; CPU {:.0}% of a core, {:.0} µs per answer",
        kind.name(),
        100.0 * real.share_admitted(),
        real.admitted,
        real.attempts,
        real.admitted_ms.0,
        real.admitted_ms.1,
        real.kinds(),
        100.0 * cpu / duration.as_secs_f64(),
        row.cpu_per_answer(),
    );
    if !logged.is_empty() {
        println!("{:<16} {who:<9} logged: {}", "", counts(logged));
    }
}

/// Warms the responder with the real logins' tokens, then runs the real
/// logins and the flood side by side for `duration`.
#[allow(clippy::too_many_arguments)]
async fn measure(
    url: &str,
    tokens: &Arc<Vec<String>>,
    logins: usize,
    rate: u64,
    duration: Duration,
    flood: usize,
    credentials: Credentials,
    responder: Service,
) -> Row {
    warm(url, tokens, logins).await;
    let real = Arc::new(Connects::default());
    let flooded = Arc::new(Connects::default());
    let cpu_before = responder.cpu_seconds();
    let begin = Instant::now();
    let until = begin + duration;
    let logins_done = async {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut started = tokio::task::JoinSet::new();
        let mut n = 0;
        while Instant::now() < until {
            ticks.tick().await;
            let (url, token, real) = (url.to_string(), tokens[n % logins].clone(), real.clone());
            n += 1;
            started.spawn(async move {
                let (took, outcome) = connect_once(&url, "load", &token).await;
                real.record(took, outcome);
            });
        }
        while started.join_next().await.is_some() {}
    };
    tokio::join!(
        logins_done,
        closed_loop(url, flood, until, credentials, flooded.clone())
    );
    let cpu = responder.cpu_seconds() - cpu_before;
    let elapsed = begin.elapsed();
    // Decisions still under way end by their deadline (3 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (logged, _) = logged_codes(&responder._dir.path().join("service.log"), 0);
    drop(responder);
    Row {
        real: real.summary(elapsed),
        flood: flooded.summary(duration),
        cpu,
        logged,
    }
}

/// The first `n` tokens connect once each, 16 at a time.
async fn warm(url: &str, tokens: &Arc<Vec<String>>, n: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (url, tokens, next) = (url.to_string(), tokens.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let _ = connect_once(&url, "load", &tokens[i]).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Tokens with `real`'s claims (so its issuer, audience and expiry) and
/// signature under a header naming a kid the issuer never published.
fn made_up_kids(real: &str) -> Vec<String> {
    let (_, rest) = real.split_once('.').expect("a JWS");
    (0..MADE_UP)
        .map(|n| {
            let header =
                serde_json::json!({"alg": "RS256", "typ": "at+jwt", "kid": format!("made-up-{n}")});
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
        })
        .collect()
}
