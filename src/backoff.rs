//! Exponential backoff for retry loops.

use std::time::Duration;

/// Waits that double from `first` up to `max`, back to `first` on `reset`.
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(250), ms(1000));
        let waits: Vec<_> = (0..4).map(|_| b.next_wait()).collect();
        assert_eq!(waits, [ms(250), ms(500), ms(1000), ms(1000)]);
        b.reset();
        assert_eq!(b.next_wait(), ms(250));
    }
}
