//! `idle`: the service's CPU use while nothing happens.

use std::time::Duration;

use crate::procs::start_nats;
use crate::tally::report_service;
use crate::Ctx;

pub async fn run(ctx: &Ctx, duration: Duration) {
    let nats = start_nats(None);
    let (service, ready) = ctx.start(nats.port, "").await;
    println!("startup to ready: {:.0} ms", ready.as_secs_f64() * 1000.0);
    let cpu_before = service.cpu_seconds();
    let d: Duration = duration;
    tokio::time::sleep(d).await;
    println!("idle for {:.0}s", d.as_secs_f64());
    report_service(&service, cpu_before, d);
}
