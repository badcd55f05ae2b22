//! How many connections a listener holds, and for whom: at most
//! `per_source` from one source and `total` in all, so that one client,
//! however many connections it opens, cannot take every slot and keep the
//! others (the identity provider, a health probe) out.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

pub(super) struct ConnSlots {
    per_source: usize,
    total: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    /// Only sources holding a slot have an entry: the map is as large as
    /// the connections open, not as the addresses ever seen.
    by_source: HashMap<IpAddr, usize>,
}

/// Why a connection got no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Its source holds `per_source` connections already.
    Source,
    /// The listener holds `total` connections.
    Full,
}

/// A held slot, given back when dropped (when its connection ends).
pub(super) struct Slot {
    slots: Arc<ConnSlots>,
    source: IpAddr,
}

impl ConnSlots {
    pub(super) fn new(per_source: usize, total: usize) -> Arc<ConnSlots> {
        Arc::new(ConnSlots {
            per_source,
            total,
            held: Mutex::default(),
        })
    }

    /// A slot for a connection from `peer`, if its source and the listener
    /// are under their caps.
    pub(super) fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refused> {
        let source = source(peer);
        let mut held = self.lock();
        let of_source = held.by_source.get(&source).copied().unwrap_or(0);
        if of_source >= self.per_source {
            return Err(Refused::Source);
        }
        if held.total >= self.total {
            return Err(Refused::Full);
        }
        held.total += 1;
        held.by_source.insert(source, of_source + 1);
        Ok(Slot {
            slots: self.clone(),
            source,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // Nothing panics while holding the lock; were it poisoned, the
        // counts would still be whole.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        held.total -= 1;
        if let Some(n) = held.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

/// Whom a peer address counts against: an IPv4 address (also when it
/// arrives IPv4-mapped on an IPv6 socket), or an IPv6 address's /64, since
/// one host is commonly given a whole /64 and could otherwise open every
/// connection from addresses of its own.
fn source(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_is_capped_and_leaves_room_for_the_others() {
        let slots = ConnSlots::new(2, 5);
        let a1 = slots.take(ip("10.0.0.1")).unwrap();
        let _a2 = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.1")).err(), Some(Refused::Source));
        let _b = slots.take(ip("10.0.0.2")).unwrap();
        // A slot given back can be taken again by its source.
        drop(a1);
        let _a3 = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.1")).err(), Some(Refused::Source));
    }

    #[test]
    fn the_total_is_capped_over_all_sources_and_freed_as_connections_end() {
        let slots = ConnSlots::new(2, 3);
        let held: Vec<Slot> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .into_iter()
            .map(|a| slots.take(ip(a)).unwrap())
            .collect();
        assert_eq!(slots.take(ip("10.0.0.4")).err(), Some(Refused::Full));
        drop(held);
        assert_eq!(slots.lock().total, 0);
        assert!(
            slots.lock().by_source.is_empty(),
            "no entry outlives its slots"
        );
        let _again = slots.take(ip("10.0.0.4")).unwrap();
    }

    #[test]
    fn a_source_over_its_own_cap_is_told_so_even_when_all_are_taken() {
        let slots = ConnSlots::new(1, 1);
        let _only = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.1")).err(), Some(Refused::Source));
        assert_eq!(slots.take(ip("10.0.0.2")).err(), Some(Refused::Full));
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_a_mapped_ipv4_as_the_ipv4() {
        let slots = ConnSlots::new(1, 10);
        let _a = slots.take(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            slots.take(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refused::Source)
        );
        let _other_64 = slots.take(ip("2001:db8:1:3::1")).unwrap();
        let _v4 = slots.take(ip("192.0.2.7")).unwrap();
        assert_eq!(
            slots.take(ip("::ffff:192.0.2.7")).err(),
            Some(Refused::Source)
        );
    }
}
