//! `connect`: real clients connect at once through nats-server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nats_oidc_callout_test_support::server_sim::Answer;

use crate::tally::{report_service, Tally};
use crate::Ctx;

pub async fn run(ctx: &Ctx, clients: usize) {
    let Ctx { tokens, .. } = ctx;
    let nats = ctx.callout_nats(false);
    let (service, ready) = ctx.start(nats.port, "").await;
    println!("startup to ready: {:.0} ms", ready.as_secs_f64() * 1000.0);
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let tally = Arc::new(Tally::default());
    let cpu_before = service.cpu_seconds();
    let begin = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let url = url.clone();
            let token = tokens[i % tokens.len()].clone();
            let tally = tally.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let result =
                    async_nats::ConnectOptions::with_user_and_password("load".into(), token)
                        .connection_timeout(Duration::from_secs(10))
                        .connect(url)
                        .await;
                let took = t.elapsed();
                match result {
                    Ok(c) => {
                        tally.record(took, Ok(Answer::Allowed));
                        Some(c)
                    }
                    Err(e) => {
                        tally.record(took, Err(e.to_string()));
                        None
                    }
                }
            })
        })
        .collect();
    let mut held = Vec::new();
    for t in tasks {
        held.push(t.await.unwrap());
    }
    let elapsed = begin.elapsed();
    println!(
        "connect mode: {clients} clients at once, {}",
        if ctx.xkey_on { "xkey" } else { "no xkey" }
    );
    tally.report(elapsed);
    report_service(&service, cpu_before, elapsed);
    drop(held);
}
