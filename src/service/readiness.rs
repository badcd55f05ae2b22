//! What `/readyz` needs to know that the rest of the service does not keep:
//! whether the NATS connection is up right now.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Default)]
pub struct Readiness {
    nats_connected: AtomicBool,
}

impl Readiness {
    pub fn set_nats_connected(&self, up: bool) {
        self.nats_connected.store(up, Ordering::Release);
    }

    pub fn nats_connected(&self) -> bool {
        self.nats_connected.load(Ordering::Acquire)
    }
}
