//! The header that opens every QUIC stream between gateways (`mesh_core::wire`), read as the
//! gateway reads it (prefix, then the body it announces) and as one buffer; and the tunnel
//! reply (status byte, `str8` message).

use mesh_core::wire::{PREFIX_LEN, StreamHeader, TunnelReply};

/// Decodes `data` as a stream header and as a tunnel reply; whatever is accepted must
/// re-encode to bytes that decode to the same value.
pub fn stream_header(data: &[u8]) {
    let whole = StreamHeader::decode(data);
    match &whole {
        Ok(header) => round_trip(header),
        Err(e) => {
            let _ = (e.label(), e.to_string());
        }
    }
    if let Some(prefix) = data.get(..PREFIX_LEN) {
        let prefix: &[u8; PREFIX_LEN] = prefix.try_into().expect("a slice of PREFIX_LEN bytes");
        match StreamHeader::decode_prefix(prefix) {
            Ok(p) => {
                let rest = &data[PREFIX_LEN..];
                let body = &rest[..p.body_len.min(rest.len())];
                let stepwise = StreamHeader::decode_body(body, p.minor);
                if let Ok(header) = &stepwise {
                    round_trip(header);
                }
                if rest.len() == p.body_len {
                    assert_eq!(stepwise, whole, "stepwise and whole decoding disagree");
                }
            }
            Err(e) => assert_eq!(Err(e), whole, "a refused prefix refuses the header"),
        }
    }
    if let [code, len, rest @ ..] = data {
        let msg = &rest[..usize::from(*len).min(rest.len())];
        if let Ok(reply) = TunnelReply::decode(*code, msg) {
            let bytes = reply.encode();
            let again = TunnelReply::decode(bytes[0], &bytes[2..]);
            assert_eq!(again, Ok(reply), "a tunnel reply survives re-encoding");
            assert_eq!(
                usize::from(bytes[1]),
                bytes.len() - 2,
                "reply length prefix"
            );
        }
    }
}

fn round_trip(header: &StreamHeader) {
    let bytes = header
        .encode()
        .expect("a header that was decoded can be encoded");
    assert_eq!(
        StreamHeader::decode(&bytes).as_ref(),
        Ok(header),
        "a header survives re-encoding"
    );
}
