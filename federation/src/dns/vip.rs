//! Virtual IP allocation (pure): every service of the cluster-set gets one address from the
//! configured range, and every (service, cluster) pair one more for its per-cluster name.
//!
//! **Same answer everywhere.** A name's preferred address is derived from the name alone:
//! the first four bytes of SHA-256 of `<svc>.<ns>` (or `<svc>.<ns>.<cluster>`), modulo the
//! usable size of the range. So two controllers that never talked give the same service the
//! same VIP, and a controller that lost its records gives it back the same one.
//!
//! **Collisions.** When the preferred address is taken by another name, the next address up
//! is tried (linear probing, wrapping inside the range). Which name gets the preferred address
//! then depends on allocation order, which may differ between clusters; every allocation is
//! recorded (state directory or `ServiceImport.spec.ips`) and a recorded address never moves,
//! so each cluster's answer is stable. With a /16 (65 534 usable addresses) and a few hundred
//! services a collision is rare (about n²/2/65 534: 0.3 for 200 names).
//!
//! The first and last address of the range are never handed out.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha256};

/// The default range: `240.240.0.0/16`, in the reserved class E block (`240.0.0.0/4`). It is
/// never routed on the internet nor assigned by any network, so a VIP can never shadow a real
/// destination; Linux hosts accept and capture it like any other address (Istio's DNS proxy
/// allocates from the same block for the same reason).
pub(crate) const DEFAULT_RANGE: &str = "240.240.0.0/16";

/// A range of IPv4 addresses (`a.b.c.d/len`, len 8 to 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VipRange {
    base: u32,
    prefix: u8,
}

/// An IPv6 range whose addresses mirror the IPv4 allocation (`prefix + offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vip6Range {
    base: u128,
    prefix: u8,
}

/// A range that does not parse or is too small.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a usable VIP range: {1}")]
pub(crate) struct RangeError(String, &'static str);

impl std::str::FromStr for VipRange {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| RangeError(s.to_string(), why);
        let (addr, len) = s.split_once('/').ok_or(err("expected address/prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err("not an IPv4 address"))?;
        let prefix: u8 = len.parse().map_err(|_| err("not a prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(err("the prefix length must be 8 to 30"));
        }
        let base = u32::from(addr);
        let mask = u32::MAX << (32 - prefix);
        if base & !mask != 0 {
            return Err(err("host bits are set"));
        }
        Ok(Self { base, prefix })
    }
}

impl std::fmt::Display for VipRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl std::str::FromStr for Vip6Range {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| RangeError(s.to_string(), why);
        let (addr, len) = s.split_once('/').ok_or(err("expected address/prefix"))?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| err("not an IPv6 address"))?;
        let prefix: u8 = len.parse().map_err(|_| err("not a prefix length"))?;
        if !(8..=112).contains(&prefix) {
            return Err(err("the prefix length must be 8 to 112"));
        }
        let base = u128::from(addr);
        if base & (u128::MAX >> prefix) != 0 {
            return Err(err("host bits are set"));
        }
        Ok(Self { base, prefix })
    }
}

impl std::fmt::Display for Vip6Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv6Addr::from(self.base), self.prefix)
    }
}

impl VipRange {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// Whether `ip` is a usable address of this range.
    pub(crate) fn contains(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(self.base);
        u32::from(ip) >= self.base && offset >= 1 && offset < self.size() - 1
    }

    fn offset(&self, ip: Ipv4Addr) -> u32 {
        u32::from(ip) - self.base
    }
}

impl Vip6Range {
    /// The IPv6 twin of the IPv4 VIP at `offset` in its range.
    fn at(&self, offset: u32) -> Ipv6Addr {
        Ipv6Addr::from(self.base | u128::from(offset))
    }

    /// The offset of `ip` in this range, when it is in it and the offset fits an IPv4 one.
    fn offset_of(&self, ip: Ipv6Addr) -> Option<u32> {
        let host = u128::from(ip) ^ self.base;
        if host > (u128::MAX >> self.prefix) {
            return None;
        }
        u32::try_from(host).ok()
    }
}

/// The allocations of one controller: name -> VIP, never moved once recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VipTable {
    range: VipRange,
    v6: Option<Vip6Range>,
    by_name: BTreeMap<String, Ipv4Addr>,
    by_addr: BTreeMap<Ipv4Addr, String>,
}

impl VipTable {
    /// An empty table over `range` (and its IPv6 mirror, when configured).
    pub(crate) fn new(range: VipRange, v6: Option<Vip6Range>) -> Self {
        Self {
            range,
            v6,
            by_name: BTreeMap::new(),
            by_addr: BTreeMap::new(),
        }
    }

    /// Takes recorded allocations. A record outside the range (the range was changed) or
    /// whose address another recorded name already holds is dropped and will be allocated
    /// again; returns how many were kept.
    pub(crate) fn restore(
        &mut self,
        records: impl IntoIterator<Item = (String, Ipv4Addr)>,
    ) -> usize {
        let mut kept = 0;
        for (name, ip) in records {
            if !self.range.contains(ip) || self.by_addr.contains_key(&ip) {
                continue;
            }
            if let Some(old) = self.by_name.insert(name.clone(), ip) {
                self.by_addr.remove(&old);
            } else {
                kept += 1;
            }
            self.by_addr.insert(ip, name);
        }
        kept
    }

    /// The VIP of `name`, allocating it when new. `None` only when the range is full.
    pub(crate) fn allocate(&mut self, name: &str) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_name.get(name) {
            return Some(*ip);
        }
        let usable = self.range.size() - 2;
        let start = preferred_offset(name, usable);
        for i in 0..usable {
            let offset = 1 + (start + i) % usable;
            let ip = Ipv4Addr::from(self.range.base + offset);
            if let std::collections::btree_map::Entry::Vacant(slot) = self.by_addr.entry(ip) {
                slot.insert(name.to_string());
                self.by_name.insert(name.to_string(), ip);
                return Some(ip);
            }
        }
        None
    }

    /// The recorded VIP of `name`.
    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<Ipv4Addr> {
        self.by_name.get(name).copied()
    }

    /// The IPv6 twin of `ip`, when an IPv6 range is configured.
    pub(crate) fn v6_of(&self, ip: Ipv4Addr) -> Option<Ipv6Addr> {
        self.v6.map(|r| r.at(self.range.offset(ip)))
    }

    /// What the VIP `ip` was allocated to: a cluster-set name (`<svc>.<ns>`) or a per-cluster
    /// one (`<svc>.<ns>.<cluster>`).
    pub(crate) fn target_of(&self, ip: Ipv4Addr) -> Option<mesh_core::api::VipTarget> {
        let name = self.by_addr.get(&ip)?;
        let mut labels = name.splitn(3, '.');
        let (svc, ns) = (labels.next()?, labels.next()?);
        Some(mesh_core::api::VipTarget {
            service: mesh_core::names::ServiceKey::new(svc, ns).ok()?,
            cluster: labels.next().map(str::to_string),
        })
    }

    /// The IPv4 VIP whose IPv6 twin is `ip`, when `ip` is in the IPv6 range.
    pub(crate) fn v4_of(&self, ip: Ipv6Addr) -> Option<Ipv4Addr> {
        let v6 = self.v6?;
        let offset = v6.offset_of(ip)?;
        (offset < self.range.size()).then(|| Ipv4Addr::from(self.range.base + offset))
    }

    /// Every allocation, by name.
    pub(crate) fn records(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.by_name
    }

    /// Forgets `name` (its address may be handed out again).
    #[cfg(test)]
    fn release(&mut self, name: &str) {
        if let Some(ip) = self.by_name.remove(name) {
            self.by_addr.remove(&ip);
        }
    }
}

/// The preferred offset (0-based among `usable` addresses) of `name`.
fn preferred_offset(name: &str, usable: u32) -> u32 {
    let digest = Sha256::digest(name.as_bytes());
    let h = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    h % usable
}

/// The allocation name of a service's cluster-set VIP: `<svc>.<ns>`.
pub(crate) fn service_name(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}")
}

/// The allocation name of a service's per-cluster VIP: `<svc>.<ns>.<cluster>`.
pub(crate) fn cluster_name(name: &str, namespace: &str, cluster: &str) -> String {
    format!("{name}.{namespace}.{cluster}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(range: &str) -> VipTable {
        VipTable::new(range.parse().unwrap(), None)
    }

    #[test]
    fn ranges_parse_and_refuse_what_cannot_work() {
        let r: VipRange = DEFAULT_RANGE.parse().unwrap();
        assert_eq!(r.to_string(), "240.240.0.0/16");
        assert!(r.contains("240.240.0.1".parse().unwrap()));
        assert!(!r.contains("240.240.0.0".parse().unwrap()));
        assert!(!r.contains("240.240.255.255".parse().unwrap()));
        assert!(!r.contains("10.0.0.1".parse().unwrap()));
        for bad in [
            "240.240.0.0",
            "240.240.0.1/16",
            "240.240.0.0/31",
            "x/16",
            "::/64",
        ] {
            assert!(bad.parse::<VipRange>().is_err(), "{bad}");
        }
        let v6: Vip6Range = "2001:2::/48".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:2::/48");
        assert!("2001:2::1/48".parse::<Vip6Range>().is_err());
    }

    #[test]
    fn the_same_name_gets_the_same_vip_in_every_table() {
        let mut a = table(DEFAULT_RANGE);
        let mut b = table(DEFAULT_RANGE);
        b.allocate("other.demo").unwrap();
        let ip = a.allocate("echo.demo").unwrap();
        assert_eq!(b.allocate("echo.demo"), Some(ip));
        assert_eq!(a.allocate("echo.demo"), Some(ip), "stable on repeat");
        assert!(a.range.contains(ip));
        assert_ne!(a.allocate("echo.demo.east").unwrap(), ip);
    }

    #[test]
    fn collisions_probe_upwards_and_wrap() {
        // A /30 has two usable addresses: the second name must take the other one, the third
        // finds the range full.
        let mut t = table("10.0.0.0/30");
        let first = t.allocate("a").unwrap();
        let second = t.allocate("b").unwrap();
        assert_ne!(first, second);
        for ip in [first, second] {
            assert!(["10.0.0.1", "10.0.0.2"].contains(&ip.to_string().as_str()));
        }
        assert_eq!(t.allocate("c"), None);
        t.release("a");
        assert_eq!(t.allocate("c"), Some(first));
    }

    #[test]
    fn recorded_allocations_never_move() {
        let mut t = table(DEFAULT_RANGE);
        let pinned: Ipv4Addr = "240.240.1.2".parse().unwrap();
        let kept = t.restore([
            ("echo.demo".to_string(), pinned),
            ("stale.demo".to_string(), "10.1.1.1".parse().unwrap()),
            ("dup.demo".to_string(), pinned),
        ]);
        assert_eq!(kept, 1);
        assert_eq!(t.allocate("echo.demo"), Some(pinned));
        assert_eq!(t.get("stale.demo"), None);
        assert_ne!(t.allocate("dup.demo"), Some(pinned));
        let mut again = table(DEFAULT_RANGE);
        again.restore(t.records().clone());
        assert_eq!(again, t);
    }

    #[test]
    fn a_vip_names_what_it_was_allocated_to() {
        let mut t = VipTable::new(
            "240.240.0.0/16".parse().unwrap(),
            Some("fd00:240::/64".parse().unwrap()),
        );
        let set = t.allocate(&service_name("echo", "demo")).unwrap();
        let pinned = t
            .allocate(&cluster_name("echo", "demo", "us-east"))
            .unwrap();
        let target = t.target_of(set).unwrap();
        assert_eq!(target.service.to_string(), "echo.demo");
        assert_eq!(target.cluster, None);
        assert_eq!(target.host(), "echo.demo.svc.clusterset.local");
        let target = t.target_of(pinned).unwrap();
        assert_eq!(target.cluster.as_deref(), Some("us-east"));
        assert_eq!(target.host(), "echo.demo.svc.us-east.clusterset.local");
        assert_eq!(
            t.target_of(Ipv4Addr::new(10, 0, 0, 1)),
            None,
            "never handed out"
        );
        let twin = t.v6_of(set).unwrap();
        assert_eq!(t.v4_of(twin), Some(set));
        assert_eq!(t.v4_of("fd00:241::1".parse().unwrap()), None);
    }

    #[test]
    fn ipv6_mirrors_the_ipv4_offset() {
        let mut t = VipTable::new(
            DEFAULT_RANGE.parse().unwrap(),
            Some("fd00:240::/64".parse().unwrap()),
        );
        t.restore([("echo.demo".to_string(), "240.240.1.2".parse().unwrap())]);
        let ip = t.allocate("echo.demo").unwrap();
        assert_eq!(t.v6_of(ip), Some("fd00:240::102".parse().unwrap()));
        assert_eq!(table(DEFAULT_RANGE).v6_of(ip), None);
    }
}
