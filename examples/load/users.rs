//! `users`: a long run of distinct people, each token new (a user each:
//! `sub` user0, user1, …), through the cold path, with requests published
//! straight onto the callout subject as `direct` does (a real connect per
//! person would make the run's length the client's, not the service's).
//! Every `--window` answers it prints the service's CPU per authorization
//! in that window and its resident memory; at the start and the end, how
//! many metric series the service exports and its log lines per
//! authorization. Whatever grows per person without a bound shows as CPU
//! or memory that climbs from window to window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use nats_oidc_callout::unix_now;
use nats_oidc_callout_test_support::server_sim::{Answer, ServerSim};

use crate::procs::{count_lines, start_nats, Service};
use crate::Ctx;

pub async fn run(ctx: &Ctx, count: u64, window: u64, alg: Algorithm, concurrency: usize) {
    let nats = start_nats(None);
    let (service, _) = ctx.start(nats.port, "").await;
    let client = async_nats::ConnectOptions::with_user_and_password("auth".into(), "authpw".into())
        .connect(format!("nats://127.0.0.1:{}", nats.port))
        .await
        .unwrap();
    let sim = Arc::new(ServerSim::new(&ctx.account.public_key()));
    let kid = ctx.issuer.current_kid(alg);
    let log = service._dir.path().join("service.log");
    let series_before = metric_series(&service).await;
    println!(
        "users: {count} distinct people, each token new ({alg:?}), token cache {}; a line every {window} answers",
        if ctx.no_token_cache { "off" } else { "on (the default 8 MiB)" },
    );
    println!(
        "{:>10} {:>16} {:>10} {:>12}",
        "answers", "µs CPU / auth", "rss MiB", "answers/s"
    );
    let next = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, sim, next, answered, refused, kid) = (
            client.clone(),
            sim.clone(),
            next.clone(),
            answered.clone(),
            refused.clone(),
            kid.clone(),
        );
        // Tokens are minted as the run goes, one per person: a million made
        // beforehand would hold gigabytes in this process.
        let issuer = ctx.issuer.clone();
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let token = issuer.sign(
                    &kid,
                    &issuer.claims(&format!("user{n}"), "nats", &["reader"], 3600),
                );
                let body = sim.request(&token, unix_now());
                let outcome = match tokio::time::timeout(
                    Duration::from_secs(5),
                    client.request("$SYS.REQ.USER.AUTH", body.into()),
                )
                .await
                {
                    Ok(Ok(m)) => sim.read_answer(&m.payload, None),
                    Ok(Err(e)) => Answer::Unreadable(e.to_string()),
                    Err(_) => Answer::Unreadable("no answer within 5 s".into()),
                };
                if !matches!(outcome, Answer::Allowed) {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let begin = Instant::now();
    let (mut mark_n, mut mark_cpu, mut mark_t) = (0u64, service.cpu_seconds(), begin);
    let mut per_auth = Vec::new();
    let mut peak_rss = 0f64;
    while !workers.is_empty() {
        tokio::select! {
            _ = workers.join_next() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let n = answered.load(Ordering::Relaxed);
        if n >= mark_n + window || (workers.is_empty() && n > mark_n) {
            let cpu = service.cpu_seconds();
            let us = (cpu - mark_cpu) * 1e6 / (n - mark_n) as f64;
            let rss = service.rss_mib().0;
            peak_rss = peak_rss.max(rss);
            let rate = (n - mark_n) as f64 / mark_t.elapsed().as_secs_f64();
            println!("{n:>10} {us:>16.0} {rss:>10.1} {rate:>12.0}");
            per_auth.push(us);
            (mark_n, mark_cpu, mark_t) = (n, cpu, Instant::now());
        }
    }
    let elapsed = begin.elapsed();
    let series_after = metric_series(&service).await;
    let lines = count_lines(&log, "");
    let n = answered.load(Ordering::Relaxed);
    let tenth = (per_auth.len() / 10).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    println!(
        "users: {n} answers in {:.0} s ({} not allowed); CPU per authorization: first {} windows {:.0} µs, last {} windows {:.0} µs ({:.2}×); peak rss {:.1} MiB (final {:.1}); metric series {} at start, {} at end; {:.2} log lines per authorization",
        elapsed.as_secs_f64(),
        refused.load(Ordering::Relaxed),
        tenth,
        mean(&per_auth[..tenth.min(per_auth.len())]),
        tenth,
        mean(&per_auth[per_auth.len().saturating_sub(tenth)..]),
        mean(&per_auth[per_auth.len().saturating_sub(tenth)..]) / mean(&per_auth[..tenth.min(per_auth.len())]),
        peak_rss,
        service.rss_mib().0,
        series_before,
        series_after,
        lines as f64 / n.max(1) as f64,
    );
}

/// How many series the service's /metrics exports (lines not comments).
async fn metric_series(service: &Service) -> usize {
    let Some(port) = service.http_port else {
        return 0;
    };
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("the service's /metrics answers")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count()
}
