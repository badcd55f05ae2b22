//! `restart`: how soon after nats-server accepts again the service is
//! connected.

use std::time::{Duration, Instant};

use crate::procs::{count_lines, last_time, start_nats};
use crate::Ctx;

pub async fn run(ctx: &Ctx, rounds: usize, down: Duration) {
    let Ctx { account, .. } = ctx;
    let mut nats = start_nats(Some((&account.public_key(), None)));
    let (service, _) = ctx.start(nats.port, "").await;
    let log = service._dir.path().join("service.log");
    let mut lags = Vec::new();
    for round in 1..=rounds {
        let before = count_lines(&log, "connected to NATS");
        nats.restart(down);
        let accepting = std::time::SystemTime::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while count_lines(&log, "connected to NATS") <= before {
            assert!(Instant::now() < deadline, "the service did not reconnect");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let connected = last_time(&log, "connected to NATS");
        let lag = connected
            .duration_since(accepting)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        println!("round {round}: connected {lag:.1} ms after nats-server accepted again");
        lags.push(lag);
    }
    lags.sort_by(f64::total_cmp);
    println!(
        "restart: {rounds} rounds, down {}; reconnected after median {:.1} ms, max {:.1} ms",
        humantime::format_duration(down),
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
}
