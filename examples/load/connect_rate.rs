//! `connect-rate`: clients connect and close in a loop, answered by the
//! service, the null responder and the checking responder in turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::procs::Service;
use crate::responder::{start_null_responder, Checking};
use crate::Ctx;

pub async fn run(ctx: &Ctx, clients: usize, duration: Duration, rounds: usize) {
    let Ctx {
        account,
        tokens,
        token_jwk,
        ..
    } = ctx;
    let xkey = ctx.xkey();
    let nats = ctx.callout_nats(false);
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let d: Duration = duration;
    println!(
        "connect-rate: {clients} clients connect and close for {:.0}s per responder, {}, token cache {}",
        d.as_secs_f64(),
        if ctx.xkey_on { "xkey" } else { "no xkey" },
        if ctx.no_token_cache { "off (every token verified)" } else { "on (tokens seen before)" }
    );
    // Every token connects once first: with the cache on, the
    // measured connects are all "seen before"; either way both
    // responders start warm.
    let warm = Duration::from_secs(2);
    for round in 1..=rounds {
        let (service, _) = ctx.start(nats.port, "").await;
        connect_loop(&url, tokens, clients, warm, &service).await;
        let (s_n, s_err, s_t, s_cpu) = connect_loop(&url, tokens, clients, d, &service).await;
        drop(service);
        let null = start_null_responder(nats.port, account, xkey, None);
        connect_loop(&url, tokens, clients, warm, &null).await;
        let (n_n, n_err, n_t, n_cpu) = connect_loop(&url, tokens, clients, d, &null).await;
        drop(null);
        let checking = start_null_responder(
            nats.port,
            account,
            xkey,
            Some(Checking {
                token_jwk: ctx.no_token_cache.then_some(token_jwk),
                ..Default::default()
            }),
        );
        connect_loop(&url, tokens, clients, warm, &checking).await;
        let (c_n, c_err, c_t, c_cpu) = connect_loop(&url, tokens, clients, d, &checking).await;
        drop(checking);
        let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64();
        let per = |cpu: f64, n: u64| cpu * 1e6 / n.max(1) as f64;
        println!(
            "round {round}: service {:.0} connects/s ({s_err} errors), {:.0} µs CPU each; null responder {:.0} connects/s ({n_err} errors), {:.0} µs CPU each",
            rate(s_n, s_t),
            per(s_cpu, s_n),
            rate(n_n, n_t),
            per(n_cpu, n_n)
        );
        println!(
            "round {round}: service ÷ null: CPU per authorization {:.2}×, connect rate {:.2}×",
            per(s_cpu, s_n) / per(n_cpu, n_n),
            rate(s_n, s_t) / rate(n_n, n_t)
        );
        println!(
            "round {round}: checking responder {:.0} connects/s ({c_err} errors), {:.0} µs CPU each; service ÷ checking: CPU per authorization {:.2}×, connect rate {:.2}×",
            rate(c_n, c_t),
            per(c_cpu, c_n),
            per(s_cpu, s_n) / per(c_cpu, c_n),
            rate(s_n, s_t) / rate(c_n, c_t)
        );
    }
}

/// `clients` tasks connect and close for `duration`.
async fn connect_loop(
    url: &str,
    tokens: &Arc<Vec<String>>,
    clients: usize,
    duration: Duration,
    responder: &Service,
) -> (u64, u64, Duration, f64) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = responder.cpu_seconds();
    let begin = Instant::now();
    let deadline = begin + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (url, tokens, next, errors, done) = (
            url.to_string(),
            tokens.clone(),
            next.clone(),
            errors.clone(),
            done.clone(),
        );
        workers.spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                let token = tokens[n % tokens.len()].clone();
                match async_nats::ConnectOptions::with_user_and_password("load".into(), token)
                    .connection_timeout(Duration::from_secs(5))
                    .max_reconnects(Some(0))
                    .connect(url.as_str())
                    .await
                {
                    Ok(client) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        drop(client);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = begin.elapsed();
    (
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        elapsed,
        responder.cpu_seconds() - cpu_before,
    )
}
