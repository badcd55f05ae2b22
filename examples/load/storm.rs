//! `storm`: every client reconnecting at once. `--clients` clients (each
//! with its own token) hold a connection through nats-server with auth
//! callout; then nats-server restarts (every client and the responder
//! reconnect) and, separately, every client is kicked through the system
//! account (only the clients reconnect). For each storm: how long until
//! every client is back, the p50/p99 of each client's time back, how many
//! connects nats-server refused (with valid tokens, a refusal is the auth
//! timeout), clients lost, and the responder's CPU and memory. The same
//! storms run against the service and the checking responder, on a fresh
//! nats-server each, in alternating order across rounds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::procs::{NatsServer, Service};
use crate::responder::{start_null_responder, Checking};
use crate::Ctx;

#[derive(Clone, Copy, PartialEq)]
enum Seen {
    Connected,
    Disconnected,
    /// A connect nats-server answered with an authorization violation.
    Refused,
}

/// One held client and what happened to it, in order.
struct Held {
    client: async_nats::Client,
    events: Arc<Mutex<Vec<(Instant, Seen)>>>,
}

/// The figures of one storm.
struct Storm {
    all_back_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    refused: usize,
    lost: usize,
    cpu_s: f64,
    rss_mib: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Restart,
    Kick,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Restart => "nats-server restart",
            Kind::Kick => "every client kicked",
        }
    }
}

pub async fn run(ctx: &Ctx, clients: usize, rounds: usize, down: Duration) {
    let tokens: Vec<String> = if ctx.tokens.len() >= clients {
        ctx.tokens[..clients].to_vec()
    } else {
        let began = Instant::now();
        let t: Vec<String> = (0..clients)
            .map(|i| {
                ctx.issuer
                    .token(&format!("storm{i}"), "nats", &["reader"], 3600)
            })
            .collect();
        println!(
            "{clients} storm tokens signed in {:.1}s",
            began.elapsed().as_secs_f64()
        );
        t
    };
    println!(
        "storm: {clients} clients, each with its own token; nats-server down {} per restart; {rounds} round(s); token cache {}",
        humantime::format_duration(down),
        if ctx.no_token_cache { "off" } else { "on" }
    );
    let names = ["service", "checking responder"];
    let mut results: Vec<Vec<(Kind, Storm)>> = vec![Vec::new(), Vec::new()];
    for round in 1..=rounds {
        // Alternate which goes first, so neither always gets a cold machine.
        let order: [usize; 2] = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for which in order {
            let storms = storms_for(ctx, which == 0, &tokens, down).await;
            for (kind, s) in &storms {
                println!(
                    "round {round}: {:<18} {:<20} all back {:>7.0} ms, p50 {:>6.0} ms, p99 {:>6.0} ms; refused {:>5}, lost {}; cpu {:.2} s, rss after {:.1} MiB",
                    names[which],
                    kind.name(),
                    s.all_back_ms,
                    s.p50_ms,
                    s.p99_ms,
                    s.refused,
                    s.lost,
                    s.cpu_s,
                    s.rss_mib
                );
            }
            results[which].extend(storms);
        }
    }
    for kind in [Kind::Restart, Kind::Kick] {
        let median = |which: usize, f: fn(&Storm) -> f64| {
            let mut v: Vec<f64> = results[which]
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, s)| f(s))
                .collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let sum = |which: usize, f: fn(&Storm) -> usize| -> usize {
            results[which]
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, s)| f(s))
                .sum()
        };
        println!(
            "storm ({}), medians over {rounds} round(s): service all back {:.0} ms vs checking responder {:.0} ms ({:.2}×); p99 {:.0} vs {:.0} ms; cpu {:.2} vs {:.2} s ({:.2}×); refused {} vs {}; lost {} vs {}",
            kind.name(),
            median(0, |s| s.all_back_ms),
            median(1, |s| s.all_back_ms),
            median(0, |s| s.all_back_ms) / median(1, |s| s.all_back_ms),
            median(0, |s| s.p99_ms),
            median(1, |s| s.p99_ms),
            median(0, |s| s.cpu_s),
            median(1, |s| s.cpu_s),
            median(0, |s| s.cpu_s) / median(1, |s| s.cpu_s),
            sum(0, |s| s.refused),
            sum(1, |s| s.refused),
            sum(0, |s| s.lost),
            sum(1, |s| s.lost),
        );
    }
}

/// A fresh nats-server, the responder, every client connected; then a
/// restart storm and a kick storm.
async fn storms_for(
    ctx: &Ctx,
    service: bool,
    tokens: &[String],
    down: Duration,
) -> Vec<(Kind, Storm)> {
    let mut nats = ctx.callout_nats(true);
    let responder: Service = if service {
        ctx.start(nats.port, "").await.0
    } else {
        start_null_responder(
            nats.port,
            &ctx.account,
            ctx.xkey(),
            Some(Checking {
                token_jwk: ctx.no_token_cache.then_some(&ctx.token_jwk),
                ..Default::default()
            }),
        )
    };
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let mut held = Vec::with_capacity(tokens.len());
    for chunk in tokens.chunks(250) {
        let connects = chunk.iter().map(|t| hold(&url, t.clone()));
        held.extend(futures::future::join_all(connects).await);
    }
    let mut storms = Vec::new();
    for kind in [Kind::Restart, Kind::Kick] {
        settle().await;
        let cpu_before = responder.cpu_seconds();
        let mark = Instant::now();
        let from = match kind {
            Kind::Restart => {
                nats.restart(down);
                Instant::now()
            }
            Kind::Kick => {
                kick_all(&nats, &held).await;
                mark
            }
        };
        storms.push((
            kind,
            measure(&held, mark, from, &responder, cpu_before).await,
        ));
    }
    drop(held);
    drop(responder);
    drop(nats);
    storms
}

/// Lets the previous storm's stragglers finish before the next begins.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn hold(url: &str, token: String) -> Held {
    let events: Arc<Mutex<Vec<(Instant, Seen)>>> = Arc::default();
    let noted = events.clone();
    let client = async_nats::ConnectOptions::with_user_and_password("storm".into(), token)
        .connection_timeout(Duration::from_secs(10))
        .event_callback(move |event| {
            let noted = noted.clone();
            async move {
                let seen = match event {
                    async_nats::Event::Connected => Seen::Connected,
                    async_nats::Event::Disconnected => Seen::Disconnected,
                    async_nats::Event::ClientError(async_nats::ClientError::Other(e))
                        if e.contains("authorization violation") =>
                    {
                        Seen::Refused
                    }
                    _ => return,
                };
                noted.lock().unwrap().push((Instant::now(), seen));
            }
        })
        .connect(url)
        .await
        .expect("a storm client connects before the storm");
    Held { client, events }
}

/// Every held client kicked by its connection id through the system
/// account, 256 requests at a time.
async fn kick_all(nats: &NatsServer, held: &[Held]) {
    let sys = async_nats::ConnectOptions::with_user_and_password("sys".into(), "sys".into())
        .connect(format!("nats://127.0.0.1:{}", nats.port))
        .await
        .expect("the system user connects");
    let server = sys.server_info().server_id;
    let subject = format!("$SYS.REQ.SERVER.{server}.KICK");
    let requests = held.iter().map(|h| {
        let (sys, subject) = (sys.clone(), subject.clone());
        let cid = h.client.server_info().client_id;
        async move {
            let _ = sys
                .request(subject, format!("{{\"cid\":{cid}}}").into())
                .await;
        }
    });
    futures::stream::iter(requests)
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
}

/// Waits (up to 60 s) until every client has connected again after `mark`,
/// and reads the storm's figures; times are from `from`.
async fn measure(
    held: &[Held],
    mark: Instant,
    from: Instant,
    responder: &Service,
    cpu_before: f64,
) -> Storm {
    let back = |h: &Held| -> Option<Instant> {
        let events = h.events.lock().unwrap();
        let gone = events
            .iter()
            .position(|(t, s)| *t >= mark && *s == Seen::Disconnected)?;
        events[gone..]
            .iter()
            .find(|(_, s)| *s == Seen::Connected)
            .map(|(t, _)| *t)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while held.iter().any(|h| back(h).is_none()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_s = responder.cpu_seconds() - cpu_before;
    let mut took: Vec<f64> = held
        .iter()
        .filter_map(back)
        .map(|t| t.saturating_duration_since(from).as_secs_f64() * 1000.0)
        .collect();
    took.sort_by(f64::total_cmp);
    let at = |q: f64| {
        took.get(((took.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let refused = held
        .iter()
        .map(|h| {
            h.events
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, s)| *t >= mark && *s == Seen::Refused)
                .count()
        })
        .sum();
    Storm {
        all_back_ms: at(1.0),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        refused,
        lost: held.len() - took.len(),
        cpu_s,
        rss_mib: responder.rss_mib().0,
    }
}
