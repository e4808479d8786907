//! A query on its way to an upstream resolver and back (pure): the packet each upstream try
//! sends (the client's packet under a fresh id), which responses answer it (the try's id, QR
//! set, the same question: anything else is ignored as stray or spoofed), and what the client
//! gets (the upstream's response under the client's id, truncated to what the client can
//! take, or SERVFAIL when no upstream answered). The sockets are in `forward.rs`.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};

use super::answer::{Handled, Transport, rcode_label};

/// The largest response relayed over TCP: what two bytes of framing can say.
const MAX_TCP_RELAY: usize = u16::MAX as usize;

/// A query to forward, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardQuery {
    packet: Vec<u8>,
    query: Query,
    qtype: &'static str,
    recursion_desired: bool,
    udp_limit: u16,
}

/// What an upstream's response to one try says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamAnswer {
    /// A complete answer.
    Complete,
    /// TC set: ask again over TCP.
    Truncated,
}

impl ForwardQuery {
    /// `packet` (decoded: at least a header, one question `query`), whose type is counted as
    /// `qtype`; the client takes UDP responses up to `udp_limit` bytes.
    pub(crate) fn new(
        packet: Vec<u8>,
        query: Query,
        qtype: &'static str,
        recursion_desired: bool,
        udp_limit: u16,
    ) -> Self {
        Self {
            packet,
            query,
            qtype,
            recursion_desired,
            udp_limit,
        }
    }

    /// The packet as the client sent it.
    #[cfg(test)]
    pub(crate) fn packet(&self) -> &[u8] {
        &self.packet
    }

    /// The client's message id.
    pub(crate) fn client_id(&self) -> u16 {
        u16::from_be_bytes([self.packet[0], self.packet[1]])
    }

    /// The query type's metric label.
    #[cfg(test)]
    pub(crate) fn qtype(&self) -> &'static str {
        self.qtype
    }

    /// The client's packet with its id replaced by `id`, for one upstream try.
    pub(crate) fn upstream_packet(&self, id: u16) -> Vec<u8> {
        let mut packet = self.packet.clone();
        packet[..2].copy_from_slice(&id.to_be_bytes());
        packet
    }

    /// Whether `response` answers the try sent with `id`: `None` for anything else (too short,
    /// not a response, another id, another question, undecodable), which the caller ignores.
    pub(crate) fn accept(&self, response: &[u8], id: u16) -> Option<UpstreamAnswer> {
        if response.len() < 12 || response[..2] != id.to_be_bytes() || response[2] & 0x80 == 0 {
            return None;
        }
        let message = Message::from_vec(response).ok()?;
        if message.metadata.message_type != MessageType::Response {
            return None;
        }
        if message.metadata.truncation {
            // A truncated response may lack even its question; the id and QR were checked.
            return Some(UpstreamAnswer::Truncated);
        }
        // hickory's names compare without regard to case, so an upstream's 0x20 mixing passes.
        match message.queries.as_slice() {
            [q] if q.name == self.query.name
                && q.query_type == self.query.query_type
                && q.query_class == self.query.query_class =>
            {
                Some(UpstreamAnswer::Complete)
            }
            _ => None,
        }
    }

    /// The upstream's accepted `response` as the client gets it: under the client's id,
    /// truncated (TC, no records) when larger than the client's UDP size, or than TCP framing
    /// allows.
    pub(crate) fn relay(&self, mut response: Vec<u8>, transport: Transport) -> Handled {
        response[..2].copy_from_slice(&self.client_id().to_be_bytes());
        let rcode = rcode_label(ResponseCode::from(0, response[3] & 0x0f));
        let limit = match transport {
            Transport::Udp => usize::from(self.udp_limit),
            Transport::Tcp => MAX_TCP_RELAY,
        };
        if response.len() <= limit {
            return Handled {
                response: Some(response),
                qtype: self.qtype,
                rcode,
            };
        }
        let truncated = Message::from_vec(&response)
            .ok()
            .and_then(|m| m.truncate().to_vec().ok());
        match truncated {
            Some(truncated) if truncated.len() <= limit => Handled {
                response: Some(truncated),
                qtype: self.qtype,
                rcode,
            },
            _ => self.servfail(),
        }
    }

    /// SERVFAIL, when no upstream answered in time (or too many queries are being forwarded).
    pub(crate) fn servfail(&self) -> Handled {
        let mut message =
            Message::error_msg(self.client_id(), OpCode::Query, ResponseCode::ServFail);
        message.metadata.recursion_desired = self.recursion_desired;
        // This server does recurse for the client, through its upstreams.
        message.metadata.recursion_available = true;
        message.add_query(self.query.clone());
        Handled {
            response: message.to_vec().ok(),
            qtype: self.qtype,
            rcode: "SERVFAIL",
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, rdata};

    use super::*;

    fn forward(name: &str, t: RecordType, udp_limit: u16) -> ForwardQuery {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        let query = Query::query(Name::from_ascii(name).unwrap(), t);
        m.add_query(query.clone());
        ForwardQuery::new(m.to_vec().unwrap(), query, "A", true, udp_limit)
    }

    /// An upstream's response to `f` sent under `id`, with `answers` A records.
    fn response(f: &ForwardQuery, id: u16, answers: usize) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_available = true;
        m.add_query(f.query.clone());
        for i in 0..answers {
            m.add_answer(Record::from_rdata(
                f.query.name.clone(),
                30,
                RData::A(rdata::A::new(10, 0, (i / 256) as u8, (i % 256) as u8)),
            ));
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn each_try_gets_its_own_id_and_the_client_gets_its_id_back() {
        let f = forward("example.com.", RecordType::A, 512);
        let sent = f.upstream_packet(9);
        assert_eq!(sent[..2], [0, 9]);
        assert_eq!(sent[2..], f.packet()[2..], "the rest as received");
        let answer = response(&f, 9, 1);
        assert_eq!(f.accept(&answer, 9), Some(UpstreamAnswer::Complete));
        let relayed = f.relay(answer, Transport::Udp);
        assert_eq!((relayed.qtype, relayed.rcode), ("A", "NOERROR"));
        let m = Message::from_vec(relayed.response.as_ref().unwrap()).unwrap();
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn responses_to_something_else_are_ignored() {
        let f = forward("example.com.", RecordType::A, 512);
        let good = response(&f, 9, 1);
        assert_eq!(f.accept(&good, 10), None, "another id");
        assert_eq!(f.accept(&good[..11], 9), None, "shorter than a header");
        let mut query = good.clone();
        query[2] &= 0x7f;
        assert_eq!(f.accept(&query, 9), None, "not a response");
        let other = forward("example.org.", RecordType::A, 512);
        assert_eq!(f.accept(&response(&other, 9, 1), 9), None, "another name");
        let aaaa = forward("example.com.", RecordType::AAAA, 512);
        assert_eq!(f.accept(&response(&aaaa, 9, 1), 9), None, "another type");
        let mut garbage = good[..12].to_vec();
        garbage.extend([0xff; 20]);
        assert_eq!(f.accept(&garbage, 9), None, "undecodable");
        // Names compare without regard to case (0x20 mixing by an upstream is harmless).
        let upper = forward("EXAMPLE.com.", RecordType::A, 512);
        assert_eq!(
            f.accept(&response(&upper, 9, 0), 9),
            Some(UpstreamAnswer::Complete)
        );
        let mut tc = good;
        tc[2] |= 0x02;
        assert_eq!(f.accept(&tc, 9), Some(UpstreamAnswer::Truncated));
    }

    #[test]
    fn a_response_larger_than_the_client_takes_is_truncated_for_it() {
        let f = forward("example.com.", RecordType::A, 512);
        // 60 A records: about 1 KiB, over the 512 bytes of a client without EDNS.
        let big = response(&f, 9, 60);
        assert!(big.len() > 512);
        let relayed = f.relay(big.clone(), Transport::Udp);
        let bytes = relayed.response.unwrap();
        assert!(bytes.len() <= 512);
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation && m.answers.is_empty());
        assert_eq!(m.metadata.id, 4242);
        // Over TCP it goes whole.
        let tcp = f.relay(big.clone(), Transport::Tcp).response.unwrap();
        assert_eq!(tcp.len(), big.len());
    }

    #[test]
    fn servfail_echoes_the_question_under_the_client_id() {
        let f = forward("example.com.", RecordType::A, 512);
        let h = f.servfail();
        assert_eq!(h.rcode, "SERVFAIL");
        let m = Message::from_vec(&h.response.unwrap()).unwrap();
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        assert_eq!(m.queries[0].query_class, DNSClass::IN);
        assert_eq!(m.queries[0].name, f.query.name);
    }
}
