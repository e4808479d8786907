//! The demo echo's gRPC wire format, by hand: the length-prefixed message framing of gRPC over
//! HTTP/2 (a compressed flag byte, a 4-byte big-endian length, the message) and the protobuf
//! encoding of the four messages of `echo.proto` (varints and length-delimited strings). A few
//! dozen lines instead of a code generator and a gRPC framework in the build. Pure.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes before each message: the compressed flag and the length.
pub const FRAME_HEADER: usize = 5;

/// Why a gRPC body or a message does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body ends inside a frame.
    #[error("the body ends inside a message frame")]
    Truncated,
    /// A frame is flagged compressed; the echo negotiates no `grpc-encoding`.
    #[error("compressed messages are not supported (no grpc-encoding is accepted)")]
    Compressed,
    /// A varint runs past 10 bytes or past the message.
    #[error("a varint in the message is malformed")]
    BadVarint,
    /// A field uses a wire type protobuf does not have (or the deprecated groups).
    #[error("field {field} has the unsupported wire type {wire_type}")]
    WireType {
        /// The field number.
        field: u64,
        /// The wire type.
        wire_type: u64,
    },
    /// A string field is not UTF-8.
    #[error("field {0} is not valid UTF-8")]
    NotUtf8(u64),
}

/// One message framed for a gRPC body.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME_HEADER + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// Every message of a whole gRPC body, in order.
pub fn unframe(mut body: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        if body.len() < FRAME_HEADER {
            return Err(WireError::Truncated);
        }
        if body[0] != 0 {
            return Err(WireError::Compressed);
        }
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let rest = &body[FRAME_HEADER..];
        if rest.len() < len {
            return Err(WireError::Truncated);
        }
        messages.push(&rest[..len]);
        body = &rest[len..];
    }
    Ok(messages)
}

/// A field's value as the wire carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed 32 or 64 bits: no field of ours, skipped.
    Fixed,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(WireError::BadVarint)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError::BadVarint)
}

/// Appends a string field (proto3 leaves an empty one out).
fn put_string(out: &mut Vec<u8>, field: u64, s: &str) {
    if !s.is_empty() {
        put_varint(out, field << 3 | 2);
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

/// Appends a varint field (proto3 leaves a zero out).
fn put_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        put_varint(out, field << 3);
        put_varint(out, v);
    }
}

/// Every field of a message, in order; unknown ones are kept for the caller to ignore.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Value<'_>)>, WireError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let (field, wire_type) = (key >> 3, key & 7);
        let value = match wire_type {
            0 => Value::Varint(read_varint(&mut buf)?),
            1 | 5 => {
                let n = if wire_type == 1 { 8 } else { 4 };
                buf = buf.get(n..).ok_or(WireError::Truncated)?;
                Value::Fixed
            }
            2 => {
                let len =
                    usize::try_from(read_varint(&mut buf)?).map_err(|_| WireError::Truncated)?;
                let bytes = buf.get(..len).ok_or(WireError::Truncated)?;
                buf = &buf[len..];
                Value::Bytes(bytes)
            }
            _ => return Err(WireError::WireType { field, wire_type }),
        };
        out.push((field, value));
    }
    Ok(out)
}

/// The last value of string field `field` (protobuf: the last one wins), empty if absent.
fn string(fields: &[(u64, Value<'_>)], field: u64) -> Result<String, WireError> {
    match fields.iter().rev().find(|(f, _)| *f == field) {
        Some((_, Value::Bytes(b))) => {
            String::from_utf8(b.to_vec()).map_err(|_| WireError::NotUtf8(field))
        }
        _ => Ok(String::new()),
    }
}

/// The last value of varint field `field`, truncated to 32 bits as protobuf does; 0 if absent.
fn uint32(fields: &[(u64, Value<'_>)], field: u64) -> u32 {
    match fields.iter().rev().find(|(f, _)| *f == field) {
        Some((_, Value::Varint(v))) => *v as u32,
        _ => 0,
    }
}

/// `mesh.demo.SayRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SayRequest {
    /// What to echo.
    pub text: String,
}

/// `mesh.demo.SayReply`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SayReply {
    /// The request's text.
    pub text: String,
    /// The cluster that answered.
    pub cluster: String,
    /// The replica that answered.
    pub replica: String,
}

/// `mesh.demo.CountRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountRequest {
    /// How many replies.
    pub count: u32,
    /// Milliseconds between two replies.
    pub interval_ms: u32,
}

/// `mesh.demo.CountReply`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountReply {
    /// The reply's number, from 1.
    pub number: u32,
    /// The cluster that answered.
    pub cluster: String,
    /// The replica that answered.
    pub replica: String,
}

impl SayRequest {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, 1, &self.text);
        out
    }

    /// The message in `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let f = fields(buf)?;
        Ok(Self {
            text: string(&f, 1)?,
        })
    }
}

impl SayReply {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, 1, &self.text);
        put_string(&mut out, 2, &self.cluster);
        put_string(&mut out, 3, &self.replica);
        out
    }

    /// The message in `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let f = fields(buf)?;
        Ok(Self {
            text: string(&f, 1)?,
            cluster: string(&f, 2)?,
            replica: string(&f, 3)?,
        })
    }
}

impl CountRequest {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, 1, self.count.into());
        put_uint(&mut out, 2, self.interval_ms.into());
        out
    }

    /// The message in `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let f = fields(buf)?;
        Ok(Self {
            count: uint32(&f, 1),
            interval_ms: uint32(&f, 2),
        })
    }
}

impl CountReply {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, 1, self.number.into());
        put_string(&mut out, 2, &self.cluster);
        put_string(&mut out, 3, &self.replica);
        out
    }

    /// The message in `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let f = fields(buf)?;
        Ok(Self {
            number: uint32(&f, 1),
            cluster: string(&f, 2)?,
            replica: string(&f, 3)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_encode_as_protoc_would() {
        // protoc --encode=mesh.demo.SayRequest: text "hi" is 0a 02 68 69.
        let say = SayRequest { text: "hi".into() };
        assert_eq!(say.encode(), [0x0a, 0x02, b'h', b'i']);
        // count 300 (varint ac 02), interval 5.
        let count = CountRequest {
            count: 300,
            interval_ms: 5,
        };
        assert_eq!(count.encode(), [0x08, 0xac, 0x02, 0x10, 0x05]);
        assert_eq!(CountRequest::decode(&count.encode()).unwrap(), count);
        // Defaults are left out, as proto3 does.
        assert!(CountReply::default().encode().is_empty());
        let reply = SayReply {
            text: "hi".into(),
            cluster: "eu-central".into(),
            replica: "echo-0".into(),
        };
        assert_eq!(SayReply::decode(&reply.encode()).unwrap(), reply);
    }

    #[test]
    fn unknown_fields_are_skipped_and_bad_ones_refused() {
        // Field 9 as a varint, field 10 as fixed32, then text.
        let mut buf = vec![0x48, 0x01, 0x55, 1, 2, 3, 4];
        buf.extend_from_slice(&[0x0a, 0x01, b'x']);
        assert_eq!(SayRequest::decode(&buf).unwrap().text, "x");
        assert_eq!(
            SayRequest::decode(&[0x0a, 0x05, b'x']),
            Err(WireError::Truncated)
        );
        assert_eq!(
            SayRequest::decode(&[0x0a, 0x01, 0xff]),
            Err(WireError::NotUtf8(1))
        );
        assert_eq!(
            CountRequest::decode(&[0x08, 0xff]),
            Err(WireError::BadVarint)
        );
        assert!(matches!(
            SayRequest::decode(&[0x0b]),
            Err(WireError::WireType {
                field: 1,
                wire_type: 3
            })
        ));
    }

    #[test]
    fn frames_carry_length_prefixed_messages() {
        let framed = frame(b"abc");
        assert_eq!(&framed[..], [0, 0, 0, 0, 3, b'a', b'b', b'c']);
        let mut two = framed.to_vec();
        two.extend_from_slice(&frame(b""));
        assert_eq!(unframe(&two).unwrap(), [&b"abc"[..], &b""[..]]);
        assert_eq!(unframe(&two[..6]), Err(WireError::Truncated));
        assert_eq!(unframe(&[0, 0, 0]), Err(WireError::Truncated));
        assert_eq!(unframe(&[1, 0, 0, 0, 0]), Err(WireError::Compressed));
        assert!(unframe(&[]).unwrap().is_empty());
    }
}
