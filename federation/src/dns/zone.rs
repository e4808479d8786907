//! The records of `clusterset.local` (pure): computed from every cluster's exports and the
//! VIP table, looked up by name and type.
//!
//! - `<svc>.<ns>.svc.clusterset.local`: A (and AAAA with an IPv6 range) = the cluster-set VIP;
//! - `<svc>.<ns>.svc.<cluster>.clusterset.local`: the per-cluster VIP, for every cluster whose
//!   catalog holds the service (so it disappears when that catalog is withdrawn);
//! - `_<port>._<proto>.<name>` for each of those names: SRV per named port of the service's
//!   definition (the oldest export's ports, as its `ServiceImport` has them);
//! - the apex: SOA. Every name between a record and the apex exists (empty non-terminal), so
//!   `demo.svc.clusterset.local` is NODATA, not NXDOMAIN (RFC 8020).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::vip::{VipTable, cluster_name, service_name};
use crate::kubernetes::imports::{Exporters, desired_imports};

/// The zone's apex.
pub(crate) const APEX: &str = "clusterset.local";

/// What one name holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NameRecords {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    /// SRV records: (port, target name without the trailing dot).
    srv: Vec<(u16, String)>,
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lookup {
    /// The name holds records of the type (with the SOA for the authority section).
    Answer(Vec<Record>),
    /// The name exists but holds nothing of the type (NOERROR, empty answer).
    NoData,
    /// No such name in the zone.
    NxDomain,
    /// The name is outside `clusterset.local`.
    NotInZone,
}

/// The zone at one version of the view.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Zone {
    names: BTreeMap<String, NameRecords>,
    ttl: u32,
    serial: u32,
}

impl Zone {
    /// An empty zone (only the apex).
    pub(crate) fn empty(ttl: u32) -> Self {
        let mut names = BTreeMap::new();
        names.insert(APEX.to_string(), NameRecords::default());
        Self {
            names,
            ttl,
            serial: 1,
        }
    }

    /// The zone for `exporters`, allocating VIPs in `vips` for names seen the first time.
    /// `serial` is the SOA serial (the view's version).
    pub(crate) fn build(exporters: &Exporters, vips: &mut VipTable, ttl: u32, serial: u32) -> Self {
        let mut zone = Self::empty(ttl);
        zone.serial = serial.max(1);
        for import in desired_imports(exporters) {
            let (svc, ns) = (&import.key.name, &import.key.namespace);
            let mut hosts = Vec::new();
            if let Some(ip) = vips.allocate(&service_name(svc, ns)) {
                hosts.push((format!("{svc}.{ns}.svc.{APEX}"), ip));
            }
            for cluster in &import.clusters {
                if let Some(ip) = vips.allocate(&cluster_name(svc, ns, cluster)) {
                    hosts.push((format!("{svc}.{ns}.svc.{cluster}.{APEX}"), ip));
                }
            }
            for (host, ip) in hosts {
                for port in import.ports.iter().filter(|p| !p.name.is_empty()) {
                    let srv_name = format!(
                        "_{}._{}.{host}",
                        port.name.to_ascii_lowercase(),
                        port.protocol.to_ascii_lowercase()
                    );
                    zone.insert(srv_name).srv.push((port.port, host.clone()));
                }
                let v6 = vips.v6_of(ip);
                let records = zone.insert(host);
                records.v4 = Some(ip);
                records.v6 = v6;
            }
        }
        zone
    }

    /// The entry of `name`, creating it and its ancestors up to the apex.
    fn insert(&mut self, name: String) -> &mut NameRecords {
        let mut parent = name.as_str();
        while let Some((_, rest)) = parent.split_once('.') {
            if rest.len() < APEX.len() {
                break;
            }
            self.names.entry(rest.to_string()).or_default();
            parent = rest;
        }
        self.names.entry(name).or_default()
    }

    /// The SOA record of the zone.
    pub(crate) fn soa(&self) -> Record {
        let apex = fqdn(APEX);
        let soa = SOA::new(
            fqdn(&format!("ns.{APEX}")),
            fqdn(&format!("hostmaster.{APEX}")),
            self.serial,
            60,
            10,
            3600,
            self.ttl,
        );
        Record::from_rdata(apex, self.ttl, RData::SOA(soa))
    }

    /// Answers `name` (lowercase, with or without the trailing dot) for `qtype`; `ANY` gets
    /// every record of the name.
    pub(crate) fn lookup(&self, name: &str, qtype: RecordType) -> Lookup {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name != APEX && !name.ends_with(&format!(".{APEX}")) {
            return Lookup::NotInZone;
        }
        let Some(entry) = self.names.get(&name) else {
            return Lookup::NxDomain;
        };
        let owner = fqdn(&name);
        let any = qtype == RecordType::ANY;
        let mut answers = Vec::new();
        if name == APEX && (any || qtype == RecordType::SOA) {
            answers.push(self.soa());
        }
        if let Some(ip) = entry.v4.filter(|_| any || qtype == RecordType::A) {
            answers.push(Record::from_rdata(owner.clone(), self.ttl, RData::A(A(ip))));
        }
        if let Some(ip) = entry.v6.filter(|_| any || qtype == RecordType::AAAA) {
            answers.push(Record::from_rdata(
                owner.clone(),
                self.ttl,
                RData::AAAA(AAAA(ip)),
            ));
        }
        if any || qtype == RecordType::SRV {
            for (port, target) in &entry.srv {
                let srv = SRV::new(0, 100, *port, fqdn(target));
                answers.push(Record::from_rdata(owner.clone(), self.ttl, RData::SRV(srv)));
            }
        }
        if answers.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Answer(answers)
        }
    }
}

/// `name` as a fully qualified DNS name. Zone names are built from DNS labels, so this
/// cannot fail; a failure would give the root.
fn fqdn(name: &str) -> Name {
    Name::from_ascii(format!("{name}.")).unwrap_or_else(|_| Name::root())
}

#[cfg(test)]
mod tests {
    use mesh_core::catalog::{ExportedService, ServicePort};

    use super::*;

    fn service(ports: &[(&str, u16)]) -> ExportedService {
        ExportedService {
            healthy: true,
            endpoints: vec![],
            ports: ports
                .iter()
                .map(|(name, port)| ServicePort {
                    name: (*name).into(),
                    protocol: "TCP".into(),
                    port: *port,
                    app_protocol: None,
                })
                .collect(),
            exported_since: None,
        }
    }

    fn exporters(list: &[(&str, &str)]) -> Exporters {
        let mut all = Exporters::new();
        for (svc, cluster) in list {
            all.entry(svc.parse().unwrap()).or_default().push((
                (*cluster).to_string(),
                service(&[("http", 8080), ("", 9000)]),
            ));
        }
        all
    }

    fn table(v6: bool) -> VipTable {
        VipTable::new(
            super::super::vip::DEFAULT_RANGE.parse().unwrap(),
            v6.then(|| "fd00:240::/64".parse().unwrap()),
        )
    }

    fn a(zone: &Zone, name: &str) -> Option<Ipv4Addr> {
        match zone.lookup(name, RecordType::A) {
            Lookup::Answer(r) => match &r[0].data {
                RData::A(a) => Some(a.0),
                other => panic!("{other:?}"),
            },
            _ => None,
        }
    }

    #[test]
    fn services_get_one_cluster_set_name_and_one_per_exporting_cluster() {
        let mut vips = table(false);
        let zone = Zone::build(
            &exporters(&[("echo.demo", "east"), ("echo.demo", "west")]),
            &mut vips,
            5,
            7,
        );
        let set = a(&zone, "echo.demo.svc.clusterset.local.").unwrap();
        let east = a(&zone, "ECHO.demo.svc.east.clusterset.local").unwrap();
        let west = a(&zone, "echo.demo.svc.west.clusterset.local").unwrap();
        assert_eq!(set, vips.get("echo.demo").unwrap());
        assert_ne!(set, east);
        assert_ne!(east, west);
        assert_eq!(
            zone.lookup("echo.demo.svc.north.clusterset.local", RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            zone.lookup("nope.demo.svc.clusterset.local", RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(zone.lookup("example.com", RecordType::A), Lookup::NotInZone);
        assert_eq!(
            zone.lookup("xclusterset.local", RecordType::A),
            Lookup::NotInZone
        );
    }

    #[test]
    fn other_types_of_known_names_are_nodata() {
        let zone = Zone::build(
            &exporters(&[("echo.demo", "east")]),
            &mut table(false),
            5,
            1,
        );
        assert_eq!(
            zone.lookup("echo.demo.svc.clusterset.local", RecordType::AAAA),
            Lookup::NoData
        );
        assert_eq!(
            zone.lookup("echo.demo.svc.clusterset.local", RecordType::TXT),
            Lookup::NoData
        );
        assert_eq!(
            zone.lookup("demo.svc.clusterset.local", RecordType::A),
            Lookup::NoData
        );
        assert_eq!(
            zone.lookup("svc.clusterset.local", RecordType::A),
            Lookup::NoData
        );
        assert!(matches!(
            zone.lookup("clusterset.local", RecordType::SOA),
            Lookup::Answer(_)
        ));
        assert_eq!(
            zone.lookup("clusterset.local", RecordType::A),
            Lookup::NoData
        );
    }

    #[test]
    fn aaaa_only_with_an_ipv6_range() {
        let mut vips = table(true);
        let zone = Zone::build(&exporters(&[("echo.demo", "east")]), &mut vips, 5, 1);
        let Lookup::Answer(r) = zone.lookup("echo.demo.svc.clusterset.local", RecordType::AAAA)
        else {
            panic!("no AAAA");
        };
        let v4 = vips.get("echo.demo").unwrap();
        assert_eq!(r[0].data, RData::AAAA(AAAA(vips.v6_of(v4).unwrap())));
        assert_eq!(r[0].ttl, 5);
    }

    #[test]
    fn srv_for_named_ports_only() {
        let zone = Zone::build(
            &exporters(&[("echo.demo", "east")]),
            &mut table(false),
            5,
            1,
        );
        let Lookup::Answer(r) =
            zone.lookup("_http._tcp.echo.demo.svc.clusterset.local", RecordType::SRV)
        else {
            panic!("no SRV");
        };
        assert_eq!(r.len(), 1);
        let RData::SRV(srv) = &r[0].data else {
            panic!()
        };
        assert_eq!(srv.port, 8080);
        assert_eq!(srv.target.to_ascii(), "echo.demo.svc.clusterset.local.");
        assert!(matches!(
            zone.lookup(
                "_http._tcp.echo.demo.svc.east.clusterset.local",
                RecordType::SRV
            ),
            Lookup::Answer(_)
        ));
        assert_eq!(
            zone.lookup("_tcp.echo.demo.svc.clusterset.local", RecordType::SRV),
            Lookup::NoData
        );
        assert_eq!(
            zone.lookup("_grpc._tcp.echo.demo.svc.clusterset.local", RecordType::SRV),
            Lookup::NxDomain
        );
    }

    #[test]
    fn a_withdrawn_catalog_takes_its_names_along_and_vips_stay() {
        let mut vips = table(false);
        let both = Zone::build(
            &exporters(&[("echo.demo", "east"), ("echo.demo", "west")]),
            &mut vips,
            5,
            1,
        );
        let west = a(&both, "echo.demo.svc.west.clusterset.local").unwrap();
        let east_only = Zone::build(&exporters(&[("echo.demo", "east")]), &mut vips, 5, 2);
        assert_eq!(
            east_only.lookup("echo.demo.svc.west.clusterset.local", RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            a(&east_only, "echo.demo.svc.clusterset.local"),
            a(&both, "echo.demo.svc.clusterset.local")
        );
        let back = Zone::build(
            &exporters(&[("echo.demo", "east"), ("echo.demo", "west")]),
            &mut vips,
            5,
            3,
        );
        assert_eq!(a(&back, "echo.demo.svc.west.clusterset.local"), Some(west));
    }
}
