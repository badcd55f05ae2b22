//! The wall clock, in the unit JWTs use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Unix seconds as an RFC 3339 time, for messages.
pub(crate) fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

/// When work on one request stops being worth doing: nats-server refuses
/// the client at its auth timeout, so nothing done after that reaches
/// anyone; and at shutdown nothing may wait any more.
#[derive(Clone, Debug)]
pub struct Deadline {
    at: tokio::time::Instant,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Why work was cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Interrupted {
    /// The deadline passed.
    #[error("the request's deadline passed")]
    Expired,
    /// The service is shutting down.
    #[error("the service is shutting down")]
    Stopping,
}

impl Deadline {
    pub fn at(at: tokio::time::Instant) -> Self {
        Deadline { at, stop: None }
    }

    /// No deadline to speak of (an hour): for tools that decide one
    /// request with no server waiting on the answer.
    pub fn none() -> Self {
        Deadline::at(tokio::time::Instant::now() + std::time::Duration::from_secs(3600))
    }

    /// The same deadline, also ended when `stop` turns true.
    pub fn or_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The same deadline, not ended by shutdown: for work that, once
    /// begun, is worth finishing for the requests already routed here.
    pub fn without_stop(&self) -> Self {
        Deadline::at(self.at)
    }

    /// Whether work may still start: only time ends that. Shutdown ends
    /// waits, not work (the requests already routed here are answered).
    pub fn check(&self) -> Result<(), Interrupted> {
        if tokio::time::Instant::now() >= self.at {
            Err(Interrupted::Expired)
        } else {
            Ok(())
        }
    }

    /// Waits for `work` while the deadline allows, and until shutdown when
    /// this deadline watches for it.
    pub async fn wait<F: std::future::Future>(&self, work: F) -> Result<F::Output, Interrupted> {
        self.check()?;
        if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
            return Err(Interrupted::Stopping);
        }
        let mut stop = self.stop.clone();
        let stopping = async {
            match stop.as_mut() {
                Some(s) => {
                    let _ = s.wait_for(|stopping| *stopping).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = work => Ok(out),
            _ = tokio::time::sleep_until(self.at) => Err(Interrupted::Expired),
            _ = stopping => Err(Interrupted::Stopping),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_end_at_the_deadline_or_at_shutdown() {
        let soon = Deadline::at(tokio::time::Instant::now() + Duration::from_millis(50));
        assert_eq!(soon.check(), Ok(()));
        assert_eq!(soon.wait(async { 7 }).await, Ok(7));
        assert_eq!(
            soon.wait(std::future::pending::<()>()).await,
            Err(Interrupted::Expired)
        );
        assert_eq!(soon.check(), Err(Interrupted::Expired));

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let later = Deadline::none().or_stop(stopped);
        let waiting = tokio::spawn(async move { later.wait(std::future::pending::<()>()).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), Err(Interrupted::Stopping));
    }
}
