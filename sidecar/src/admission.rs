//! Admission of connections to a listener: caps that keep anyone who can reach a port from
//! crowding out the clients it exists for.
//!
//! A connection is *pending* from accept until it has proven itself (TLS handshake and, on the
//! peer port, the authenticated upgrade), then *open* until it closes. Pending connections are
//! capped in total and per source address, so one host opening idle connections fills its own
//! share only; open connections are capped in total. Slots are released when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// The caps of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub open: usize,
    pub pending: usize,
    pub pending_per_address: usize,
}

/// Why a connection was not admitted (also the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its source address already has its share of pending connections.
    PendingFromAddress,
    /// Too many connections are pending overall.
    Pending,
    /// Too many connections are open.
    Open,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::PendingFromAddress => "pending_from_address",
            Refused::Pending => "pending",
            Refused::Open => "limit",
        }
    }
}

#[derive(Default)]
struct Counts {
    pending: HashMap<IpAddr, usize>,
    pending_total: usize,
    open: usize,
}

/// The counts of one listener; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    caps: Caps,
    counts: Arc<Mutex<Counts>>,
}

/// A pending connection's slot.
pub struct Pending {
    admission: Admission,
    from: IpAddr,
}

/// An open connection's slot.
pub struct Open {
    admission: Admission,
}

impl Admission {
    pub fn new(caps: Caps) -> Self {
        Self {
            caps,
            counts: Arc::new(Mutex::new(Counts::default())),
        }
    }

    /// A slot for a connection just accepted from `from`.
    pub fn pending(&self, from: IpAddr) -> Result<Pending, Refused> {
        let mut counts = self.counts.lock();
        if counts.pending_total >= self.caps.pending {
            return Err(Refused::Pending);
        }
        let mine = counts.pending.entry(from).or_insert(0);
        if *mine >= self.caps.pending_per_address {
            return Err(Refused::PendingFromAddress);
        }
        *mine += 1;
        counts.pending_total += 1;
        Ok(Pending {
            admission: self.clone(),
            from,
        })
    }
}

impl Pending {
    /// The connection proved itself: trade the pending slot for an open one.
    pub fn open(self) -> Result<Open, Refused> {
        let admission = self.admission.clone();
        drop(self);
        let mut counts = admission.counts.lock();
        if counts.open >= admission.caps.open {
            return Err(Refused::Open);
        }
        counts.open += 1;
        drop(counts);
        Ok(Open { admission })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock();
        counts.pending_total = counts.pending_total.saturating_sub(1);
        if let Some(n) = counts.pending.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                counts.pending.remove(&self.from);
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock();
        counts.open = counts.open.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_address_fills_only_its_own_share_of_pending_slots() {
        let a = Admission::new(Caps {
            open: 10,
            pending: 4,
            pending_per_address: 2,
        });
        let held: Vec<_> = (0..2).map(|_| a.pending(ip(1)).unwrap()).collect();
        assert_eq!(a.pending(ip(1)).err(), Some(Refused::PendingFromAddress));
        let other = a.pending(ip(2)).unwrap();
        let _third = a.pending(ip(3)).unwrap();
        assert_eq!(a.pending(ip(4)).err(), Some(Refused::Pending));
        drop(held);
        assert!(a.pending(ip(1)).is_ok(), "released when dropped");
        // Proving itself moves a connection out of the pending count.
        let open = other.open().unwrap();
        assert!(a.pending(ip(2)).is_ok());
        drop(open);
        assert_eq!(a.counts.lock().open, 0);
    }

    #[test]
    fn open_connections_are_capped_in_total() {
        let a = Admission::new(Caps {
            open: 1,
            pending: 4,
            pending_per_address: 4,
        });
        let first = a.pending(ip(1)).unwrap().open().unwrap();
        assert_eq!(a.pending(ip(1)).unwrap().open().err(), Some(Refused::Open));
        assert_eq!(
            a.counts.lock().pending_total,
            0,
            "a refused slot is released"
        );
        drop(first);
        assert!(a.pending(ip(1)).unwrap().open().is_ok());
    }
}
