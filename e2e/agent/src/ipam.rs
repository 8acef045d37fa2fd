//! Pod IP allocation from the bridge's subnet: the bridge keeps its own address, every pod gets
//! the lowest free host address. In memory only: an agent restart starts from a clean network.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("no free pod IP left in {network}/{prefix_len}")]
    Exhausted { network: Ipv4Addr, prefix_len: u8 },
}

#[derive(Debug)]
pub struct Ipam {
    network: u32,
    prefix_len: u8,
    gateway: Ipv4Addr,
    used: BTreeSet<Ipv4Addr>,
}

impl Ipam {
    /// Pod addresses come from `gateway/prefix_len`, minus the network, broadcast and gateway.
    pub fn new(gateway: Ipv4Addr, prefix_len: u8) -> Self {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        Self {
            network: u32::from(gateway) & mask,
            prefix_len,
            gateway,
            used: BTreeSet::new(),
        }
    }

    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let size = 1u64 << (32 - u32::from(self.prefix_len));
        for offset in 1..size.saturating_sub(1) {
            let ip = Ipv4Addr::from(self.network.wrapping_add(offset as u32));
            if ip != self.gateway && !self.used.contains(&ip) {
                self.used.insert(ip);
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted {
            network: Ipv4Addr::from(self.network),
            prefix_len: self.prefix_len,
        })
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_skip_the_gateway_and_are_reused_after_release() {
        let mut ipam = Ipam::new(Ipv4Addr::new(10, 245, 0, 1), 24);
        assert_eq!(ipam.allocate(), Ok(Ipv4Addr::new(10, 245, 0, 2)));
        assert_eq!(ipam.allocate(), Ok(Ipv4Addr::new(10, 245, 0, 3)));
        ipam.release(Ipv4Addr::new(10, 245, 0, 2));
        assert_eq!(ipam.allocate(), Ok(Ipv4Addr::new(10, 245, 0, 2)));
    }

    #[test]
    fn a_full_subnet_is_an_error() {
        let mut ipam = Ipam::new(Ipv4Addr::new(10, 0, 0, 1), 30);
        assert_eq!(ipam.allocate(), Ok(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(matches!(ipam.allocate(), Err(IpamError::Exhausted { .. })));
    }
}
