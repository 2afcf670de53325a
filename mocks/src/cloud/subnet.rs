//! Free-IP accounting of one subnet: which addresses are taken, which the
//! cloud reserves, and the lowest-free-first allocation.

use super::flavor::Flavor;
use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Address pool of one subnet.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    pub cidr: Ipv4Net,
    flavor: Flavor,
    used: BTreeSet<Ipv4Addr>,
}

impl Pool {
    pub fn new(cidr: Ipv4Net, flavor: Flavor) -> Self {
        Self {
            cidr,
            flavor,
            used: BTreeSet::new(),
        }
    }

    /// Addresses still free for ENIs and secondary IPs.
    pub fn free(&self) -> u32 {
        self.flavor
            .usable(&self.cidr)
            .saturating_sub(self.used.len() as u32)
    }

    /// Take a given address (an instance's primary IP). False if it is
    /// reserved, outside the subnet or taken.
    pub fn take(&mut self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip) && !self.flavor.is_reserved(&self.cidr, ip) && self.used.insert(ip)
    }

    /// Take the `n` lowest free addresses, or none if fewer are free.
    pub fn allocate(&mut self, n: u32) -> Option<Vec<Ipv4Addr>> {
        if n > self.free() {
            return None;
        }
        let mut out = Vec::with_capacity(n as usize);
        let (first, last) = (
            u32::from(self.cidr.network()),
            u32::from(self.cidr.broadcast()),
        );
        let mut next = first;
        while out.len() < n as usize && next <= last {
            let ip = Ipv4Addr::from(next);
            if !self.flavor.is_reserved(&self.cidr, ip) && !self.used.contains(&ip) {
                out.push(ip);
            }
            next = next.saturating_add(1);
            if next == u32::MAX {
                break;
            }
        }
        if out.len() < n as usize {
            return None;
        }
        self.used.extend(out.iter().copied());
        Some(out)
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_and_never_reserved() {
        let mut pool = Pool::new("10.0.0.0/28".parse().unwrap(), Flavor::Alibaba);
        assert_eq!(pool.free(), 12);
        assert!(pool.take("10.0.0.1".parse().unwrap()));
        let got = pool.allocate(11).unwrap();
        assert_eq!(got.first(), Some(&"10.0.0.2".parse().unwrap()));
        assert_eq!(got.last(), Some(&"10.0.0.12".parse().unwrap()));
        assert_eq!(pool.free(), 0);
        assert_eq!(pool.allocate(1), None);
        pool.release("10.0.0.5".parse().unwrap());
        assert_eq!(pool.allocate(1), Some(vec!["10.0.0.5".parse().unwrap()]));
    }
}
