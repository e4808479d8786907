//! One query in, one response out (pure): decoding with its bounds, the rcode rules, and the
//! labels every query is counted under. No sockets, no clock.
//!
//! | query | response |
//! |---|---|
//! | shorter than a header, or a response (QR set) | none (dropped, counted as `dropped`) |
//! | larger than [`MAX_REQUEST`], or that does not decode (a name over 255 bytes, counts that lie) | FORMERR |
//! | an opcode other than QUERY | NOTIMP |
//! | not exactly one question (e.g. 500 names) | FORMERR |
//! | AXFR / IXFR | REFUSED (the zone is derived from live state; there is nothing to transfer) |
//! | a class other than IN | REFUSED |
//! | outside `clusterset.local` | forwarded to the upstreams when there are any ([`Decision::Forward`]), else REFUSED |
//! | inside it | the zone's answer, NXDOMAIN or NODATA, authoritative, with the SOA in the authority section |
//!
//! Recursion desired is echoed and answered authoritatively without recursion (RA clear). A
//! response larger than the client's limit (512 bytes, or its EDNS size up to
//! [`MAX_UDP_RESPONSE`]; [`MAX_TCP_RESPONSE`] over TCP) is sent empty with TC set.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

use super::relay::ForwardQuery;
use super::zone::{Lookup, Zone};

/// The largest query accepted (a query is a header, one name and little else; EDNS options
/// and a cookie fit easily).
pub(crate) const MAX_REQUEST: usize = 1024;
/// The largest UDP response, whatever a client's EDNS says (the DNS flag day's 1232).
pub(crate) const MAX_UDP_RESPONSE: u16 = 1232;
/// The largest TCP response.
pub(crate) const MAX_TCP_RESPONSE: usize = 16 * 1024;

/// The transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// UDP: responses bounded by the client's advertised size.
    Udp,
    /// TCP.
    Tcp,
}

/// What to do with a name outside the zone (`--dns-upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutsideZone {
    /// No upstreams: REFUSED.
    Refuse,
    /// Hand the query to the upstream resolvers.
    Forward,
}

/// What one packet leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Answered (or dropped) here.
    Answer(Handled),
    /// Outside the zone, with upstreams configured: ask them.
    Forward(ForwardQuery),
}

impl From<Handled> for Decision {
    fn from(handled: Handled) -> Self {
        Self::Answer(handled)
    }
}

/// The result of handling one packet: what to send back and how to count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handled {
    /// The response, `None` when the packet is dropped.
    pub response: Option<Vec<u8>>,
    /// The query type label (`A`, `AAAA`, `SRV`, ..., `other`, `malformed`).
    pub qtype: &'static str,
    /// The rcode label (`NOERROR`, `NXDOMAIN`, `REFUSED`, `FORMERR`, `NOTIMP`, `SERVFAIL`,
    /// `dropped`).
    pub rcode: &'static str,
}

impl Handled {
    fn dropped() -> Self {
        Self {
            response: None,
            qtype: "malformed",
            rcode: "dropped",
        }
    }
}

/// Answers `packet` from `zone`, or says it is to be forwarded (only names outside the zone,
/// only with [`OutsideZone::Forward`]).
pub(crate) fn handle(
    packet: &[u8],
    zone: &Zone,
    transport: Transport,
    outside: OutsideZone,
) -> Decision {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Handled::dropped().into();
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    let request = match Message::from_vec(packet) {
        Ok(m) if packet.len() <= MAX_REQUEST => m,
        _ => {
            let mut response = Message::error_msg(id, op_code, ResponseCode::FormErr);
            response.metadata.recursion_desired = packet[2] & 0x01 != 0;
            return finish(response, "malformed", 512, transport).into();
        }
    };
    let mut limit = 512;
    let mut response = Message::new(id, MessageType::Response, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = false;
    if let Some(edns) = &request.edns {
        limit = edns.max_payload().clamp(512, MAX_UDP_RESPONSE);
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_RESPONSE);
        response.set_edns(ours);
    }
    response.add_queries(request.queries.iter().cloned());
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return finish(response, "other", limit, transport).into();
    }
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return finish(response, "malformed", limit, transport).into();
    };
    let qtype = type_label(query.query_type);
    if matches!(query.query_type, RecordType::AXFR | RecordType::IXFR)
        || query.query_class != DNSClass::IN
    {
        response.metadata.response_code = ResponseCode::Refused;
        return finish(response, qtype, limit, transport).into();
    }
    let name = query.name.to_ascii();
    match zone.lookup(&name, query.query_type) {
        Lookup::NotInZone if outside == OutsideZone::Forward => {
            // As received: the upstream sees the client's flags, EDNS options and all.
            return Decision::Forward(ForwardQuery::new(
                packet.to_vec(),
                query.clone(),
                qtype,
                request.metadata.recursion_desired,
                limit,
            ));
        }
        Lookup::NotInZone => {
            response.metadata.response_code = ResponseCode::Refused;
        }
        Lookup::Answer(records) => {
            response.metadata.authoritative = true;
            response.add_answers(records);
            response.add_authority(zone.soa());
        }
        Lookup::NoData => {
            response.metadata.authoritative = true;
            response.add_authority(zone.soa());
        }
        Lookup::NxDomain => {
            response.metadata.authoritative = true;
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(zone.soa());
        }
    }
    finish(response, qtype, limit, transport).into()
}

/// Encodes `response`, truncating it (TC, no records) when it exceeds the transport's bound.
fn finish(response: Message, qtype: &'static str, udp_limit: u16, transport: Transport) -> Handled {
    let limit = match transport {
        Transport::Udp => usize::from(udp_limit),
        Transport::Tcp => MAX_TCP_RESPONSE,
    };
    let rcode = rcode_label(response.metadata.response_code);
    let bytes = match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Ok(bytes),
        Ok(_) => response.truncate().to_vec(),
        Err(e) => Err(e),
    };
    match bytes {
        Ok(bytes) => Handled {
            response: Some(bytes),
            qtype,
            rcode,
        },
        Err(error) => {
            tracing::warn!(%error, "DNS response did not encode");
            let failed = Message::error_msg(
                response.metadata.id,
                response.metadata.op_code,
                ResponseCode::ServFail,
            );
            Handled {
                response: failed.to_vec().ok(),
                qtype,
                rcode: "SERVFAIL",
            }
        }
    }
}

/// A bounded set of labels for query types.
fn type_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::TXT => "TXT",
        RecordType::PTR => "PTR",
        RecordType::CNAME => "CNAME",
        RecordType::ANY => "ANY",
        RecordType::AXFR => "AXFR",
        RecordType::IXFR => "IXFR",
        _ => "other",
    }
}

pub(crate) fn rcode_label(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::ServFail => "SERVFAIL",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RData};
    use mesh_core::catalog::ExportedService;

    use super::super::vip::{DEFAULT_RANGE, VipTable};
    use super::*;
    use crate::kubernetes::imports::Exporters;

    fn zone() -> Zone {
        let mut exporters = Exporters::new();
        exporters
            .entry("echo.demo".parse().unwrap())
            .or_default()
            .push((
                "east".into(),
                ExportedService {
                    healthy: true,
                    endpoints: vec![],
                    ports: vec![],
                    exported_since: None,
                },
            ));
        Zone::build(
            &exporters,
            &mut VipTable::new(DEFAULT_RANGE.parse().unwrap(), None),
            5,
            9,
        )
    }

    /// What `handle` answers without upstreams.
    fn answered(packet: &[u8], zone: &Zone, transport: Transport) -> Handled {
        match handle(packet, zone, transport, OutsideZone::Refuse) {
            Decision::Answer(handled) => handled,
            Decision::Forward(f) => panic!("forwarded without upstreams: {f:?}"),
        }
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 77;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn ask(packet: &[u8]) -> (Message, Handled) {
        let handled = answered(packet, &zone(), Transport::Udp);
        (
            Message::from_vec(handled.response.as_ref().unwrap()).unwrap(),
            handled,
        )
    }

    #[test]
    fn names_in_the_zone_are_answered_authoritatively_with_the_soa() {
        let (m, h) = ask(&query("echo.demo.svc.clusterset.local.", RecordType::A));
        assert_eq!((h.qtype, h.rcode), ("A", "NOERROR"));
        assert_eq!(m.metadata.id, 77);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert!(!m.metadata.recursion_available);
        assert!(matches!(&m.answers[0].data, RData::A(_)));
        assert!(matches!(&m.authorities[0].data, RData::SOA(_)));

        let (m, h) = ask(&query("nope.demo.svc.clusterset.local.", RecordType::A));
        assert_eq!(h.rcode, "NXDOMAIN");
        assert!(m.answers.is_empty() && matches!(&m.authorities[0].data, RData::SOA(_)));

        let (m, h) = ask(&query("echo.demo.svc.clusterset.local.", RecordType::TXT));
        assert_eq!((h.qtype, h.rcode), ("TXT", "NOERROR"));
        assert!(m.answers.is_empty() && m.authorities.len() == 1);
    }

    #[test]
    fn outside_the_zone_and_transfers_are_refused() {
        let (m, h) = ask(&query("example.com.", RecordType::A));
        assert_eq!(h.rcode, "REFUSED");
        assert!(!m.metadata.authoritative);
        let (_, h) = ask(&query("clusterset.local.", RecordType::AXFR));
        assert_eq!((h.qtype, h.rcode), ("AXFR", "REFUSED"));
    }

    #[test]
    fn garbage_is_formerr_or_dropped_never_a_panic() {
        let zone = zone();
        for short in [&[][..], &[1, 2, 3][..], &[0; 11][..]] {
            assert_eq!(answered(short, &zone, Transport::Udp), Handled::dropped());
        }
        let mut packet = query("echo.demo.svc.clusterset.local.", RecordType::A);
        packet[5] = 200; // claims 200 questions
        let h = answered(&packet, &zone, Transport::Udp);
        assert_eq!((h.qtype, h.rcode), ("malformed", "FORMERR"));
        let m = Message::from_vec(&h.response.unwrap()).unwrap();
        assert_eq!(m.metadata.id, 77);
        // A 300-byte name (labels of 60): over the 255-byte limit of a name.
        let mut raw = packet[..12].to_vec();
        raw[5] = 1;
        for _ in 0..5 {
            raw.push(60);
            raw.extend([b'a'; 60]);
        }
        raw.extend([0, 0, 1, 0, 1]);
        assert_eq!(answered(&raw, &zone, Transport::Udp).rcode, "FORMERR");
        let mut oversize = query("echo.demo.svc.clusterset.local.", RecordType::A);
        oversize.resize(MAX_REQUEST + 1, 0);
        assert_eq!(answered(&oversize, &zone, Transport::Udp).rcode, "FORMERR");
        // Every prefix of a valid query, and some noise: no panic.
        for n in 0..packet.len() {
            let _ = answered(&packet[..n], &zone, Transport::Udp);
        }
        let mut noise = 0x9e37_79b9u32;
        for _ in 0..2000 {
            let len = (noise % 100) as usize + 12;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    noise ^= noise << 13;
                    noise ^= noise >> 17;
                    noise ^= noise << 5;
                    noise as u8
                })
                .collect();
            let _ = answered(&bytes, &zone, Transport::Udp);
        }
    }

    #[test]
    fn many_questions_are_formerr_and_other_opcodes_notimp() {
        let mut m = Message::query();
        for i in 0..500 {
            m.add_query(Query::query(
                Name::from_ascii(format!("s{i}.demo.svc.clusterset.local.")).unwrap(),
                RecordType::A,
            ));
        }
        let packet = m.to_vec().unwrap();
        assert_eq!(answered(&packet, &zone(), Transport::Tcp).rcode, "FORMERR");
        let mut two = Message::query();
        for i in 0..2 {
            two.add_query(Query::query(
                Name::from_ascii(format!("s{i}.x.")).unwrap(),
                RecordType::A,
            ));
        }
        assert_eq!(
            answered(&two.to_vec().unwrap(), &zone(), Transport::Udp).rcode,
            "FORMERR"
        );
        let mut notify = query("echo.demo.svc.clusterset.local.", RecordType::SOA);
        notify[2] |= 4 << 3;
        assert_eq!(answered(&notify, &zone(), Transport::Udp).rcode, "NOTIMP");
        let mut response = query("echo.demo.svc.clusterset.local.", RecordType::A);
        response[2] |= 0x80;
        assert_eq!(
            answered(&response, &zone(), Transport::Udp).rcode,
            "dropped"
        );
    }

    #[test]
    fn with_upstreams_only_names_outside_the_zone_are_forwarded_as_received() {
        let zone = zone();
        let packet = query("example.com.", RecordType::AAAA);
        let Decision::Forward(f) = handle(&packet, &zone, Transport::Udp, OutsideZone::Forward)
        else {
            panic!("example.com. not forwarded");
        };
        assert_eq!(f.packet(), packet.as_slice());
        assert_eq!((f.client_id(), f.qtype()), (77, "AAAA"));
        // The zone's own names, transfers and malformed queries are still answered here.
        for (name, t, rcode) in [
            ("echo.demo.svc.clusterset.local.", RecordType::A, "NOERROR"),
            ("nope.demo.svc.clusterset.local.", RecordType::A, "NXDOMAIN"),
            ("example.com.", RecordType::AXFR, "REFUSED"),
        ] {
            match handle(&query(name, t), &zone, Transport::Udp, OutsideZone::Forward) {
                Decision::Answer(h) => assert_eq!(h.rcode, rcode, "{name} {t}"),
                Decision::Forward(_) => panic!("{name} {t} forwarded"),
            }
        }
        let mut many = packet.clone();
        many[5] = 2;
        assert!(matches!(
            handle(&many, &zone, Transport::Udp, OutsideZone::Forward),
            Decision::Answer(Handled {
                rcode: "FORMERR",
                ..
            })
        ));
    }
}
