//! `direct`: plays nats-server, publishing signed authorization requests
//! straight onto the callout subject.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nats_oidc_callout::unix_now;
use nats_oidc_callout_test_support::server_sim::ServerSim;

use crate::procs::start_nats;
use crate::tally::{report_service, Tally};
use crate::Ctx;

pub async fn run(ctx: &Ctx, rate: u64, duration: Duration, count: Option<u64>, concurrency: usize) {
    let Ctx {
        account,
        callout_xkey,
        tokens,
        ..
    } = ctx;
    let nats = start_nats(None);
    let (service, ready) = ctx.start(nats.port, "").await;
    println!("startup to ready: {:.0} ms", ready.as_secs_f64() * 1000.0);
    let client = async_nats::ConnectOptions::with_user_and_password("auth".into(), "authpw".into())
        .connect(format!("nats://127.0.0.1:{}", nats.port))
        .await
        .unwrap();
    let sim = Arc::new(ServerSim::new(&account.public_key()));
    let callout_xkey = Arc::new(nkeys::XKey::from_seed(&callout_xkey.seed().unwrap()).unwrap());
    let sealed = ctx.xkey_on;
    let tally = Arc::new(Tally::default());
    let limit = count.unwrap_or(u64::MAX);
    let deadline = if count.is_some() {
        None
    } else {
        Some(Instant::now() + duration)
    };
    let cpu_before = service.cpu_seconds();
    let begin = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let one = {
        let (client, sim, tally, tokens, callout_xkey) = (
            client.clone(),
            sim.clone(),
            tally.clone(),
            tokens.clone(),
            callout_xkey.clone(),
        );
        move |n: u64| {
            let (client, sim, tally, tokens, callout_xkey) = (
                client.clone(),
                sim.clone(),
                tally.clone(),
                tokens.clone(),
                callout_xkey.clone(),
            );
            async move {
                let token = &tokens[(n as usize) % tokens.len()];
                let now = unix_now();
                let t = Instant::now();
                let reply = if sealed {
                    let (body, header) = sim.sealed_request(token, now, &callout_xkey);
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("Nats-Server-Xkey", header.as_str());
                    tokio::time::timeout(
                        Duration::from_secs(2),
                        client.request_with_headers("$SYS.REQ.USER.AUTH", h, body.into()),
                    )
                    .await
                } else {
                    tokio::time::timeout(
                        Duration::from_secs(2),
                        client.request("$SYS.REQ.USER.AUTH", sim.request(token, now).into()),
                    )
                    .await
                };
                let outcome = match reply {
                    Ok(Ok(m)) => Ok(sim.read_answer(&m.payload, Some(&callout_xkey))),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 2 s".into()),
                };
                tally.record(t.elapsed(), outcome);
            }
        }
    };
    let mut next_rss = 100_000u64;
    let done = move |n: u64| n >= limit || deadline.is_some_and(|d| Instant::now() >= d);
    if rate == 0 {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let one = one.clone();
            let sent = sent.clone();
            workers.spawn(async move {
                loop {
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    if done(n) {
                        break;
                    }
                    one(n).await;
                }
            });
        }
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while !workers.is_empty() {
            tokio::select! {
                _ = workers.join_next() => {}
                _ = tick.tick() => {
                    let n = sent.load(Ordering::Relaxed);
                    if n >= next_rss {
                        let (rss, peak) = service.rss_mib();
                        println!("after {n:>8} requests: rss {rss:.1} MiB, peak {peak:.1} MiB, {:.0}/s so far", n as f64 / begin.elapsed().as_secs_f64());
                        next_rss += 100_000;
                    }
                }
            }
        }
    } else {
        let mut in_flight = tokio::task::JoinSet::new();
        let per_ms = rate as f64 / 1000.0;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut n = 0u64;
        'send: loop {
            tick.tick().await;
            let due = (begin.elapsed().as_secs_f64() * 1000.0 * per_ms) as u64;
            while n < due {
                if done(n) {
                    break 'send;
                }
                in_flight.spawn(one(n));
                n += 1;
            }
            while in_flight.try_join_next().is_some() {}
        }
        while in_flight.join_next().await.is_some() {}
    }
    let elapsed = begin.elapsed();
    println!(
        "direct mode, {}, {} tokens, {}",
        if rate == 0 {
            format!("closed loop x{concurrency}")
        } else {
            format!("{rate}/s offered")
        },
        tokens.len(),
        if sealed { "xkey" } else { "no xkey" }
    );
    tally.report(elapsed);
    report_service(&service, cpu_before, elapsed);
}
