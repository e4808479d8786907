//! WebSocket frames (RFC 6455 section 5.2): FIN and opcode, a 7-, 16- or 64-bit length, a
//! masking key on frames from clients. Encoding for both sides (the end-to-end test is a
//! client), decoding with a bound on the payload. No extensions (the echo negotiates none, so
//! the reserved bits must be 0). Pure.

/// A continuation of a fragmented message.
pub const CONTINUATION: u8 = 0x0;
/// A text frame.
pub const TEXT: u8 = 0x1;
/// A binary frame.
pub const BINARY: u8 = 0x2;
/// A close frame.
pub const CLOSE: u8 = 0x8;
/// A ping.
pub const PING: u8 = 0x9;
/// A pong.
pub const PONG: u8 = 0xA;

/// One frame, its payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The last frame of its message.
    pub fin: bool,
    /// What it carries (see the constants).
    pub opcode: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Why bytes are not a frame the echo takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload is longer than the bound.
    #[error("a frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// A reserved bit is set though no extension was negotiated.
    #[error("a reserved bit is set and no extension was negotiated")]
    ReservedBits,
    /// A control frame is fragmented or longer than 125 bytes.
    #[error("a control frame is fragmented or longer than 125 bytes")]
    BadControl,
}

impl Frame {
    /// A whole message (FIN set).
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            fin: true,
            opcode,
            payload: payload.into(),
        }
    }

    /// The frame's bytes; `mask`: a client's masking key (servers send none).
    pub fn encode(&self, mask: Option<[u8; 4]>) -> Vec<u8> {
        let len = self.payload.len();
        let mut out = Vec::with_capacity(len + 14);
        out.push(u8::from(self.fin) << 7 | (self.opcode & 0x0f));
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if let Ok(len16) = u16::try_from(len) {
            out.push(mask_bit | 126);
            out.extend_from_slice(&len16.to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }

    /// The first frame in `buf` and the bytes it took, unmasked; `None`: not all there yet.
    /// A payload over `max` is refused before it arrives.
    pub fn decode(buf: &[u8], max: u64) -> Result<Option<(Self, usize)>, FrameError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(b);
                    (u64::from_be_bytes(len), 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if opcode & 0x8 != 0 && (!fin || len > 125) {
            return Err(FrameError::BadControl);
        }
        if len > max {
            return Err(FrameError::TooLarge { len, max });
        }
        let key = if masked {
            let Some(k) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        // `len <= max`, which fits memory.
        let end = at + len as usize;
        let Some(payload) = buf.get(at..end) else {
            return Ok(None);
        };
        let payload = match key {
            Some(k) => payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ k[i % 4])
                .collect(),
            None => payload.to_vec(),
        };
        Ok(Some((
            Self {
                fin,
                opcode,
                payload,
            },
            end,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455s_examples_decode() {
        // Section 5.7: an unmasked and a masked "Hello".
        let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        for bytes in [&unmasked[..], &masked[..]] {
            let (frame, used) = Frame::decode(bytes, 1024).unwrap().unwrap();
            assert_eq!(frame, Frame::new(TEXT, "Hello"));
            assert_eq!(used, bytes.len());
        }
        assert_eq!(
            Frame::new(TEXT, "Hello").encode(Some([0x37, 0xfa, 0x21, 0x3d])),
            masked
        );
        assert_eq!(Frame::new(TEXT, "Hello").encode(None), unmasked);
        // A fragment of a message: FIN clear.
        let (first, _) = Frame::decode(&[0x01, 0x03, b'H', b'e', b'l'], 9)
            .unwrap()
            .unwrap();
        assert!(!first.fin);
    }

    #[test]
    fn lengths_of_every_size_round_trip_and_partial_frames_wait() {
        for len in [0usize, 125, 126, 65535, 65536, 200_000] {
            let frame = Frame::new(BINARY, vec![7u8; len]);
            let bytes = frame.encode(Some([1, 2, 3, 4]));
            let (back, used) = Frame::decode(&bytes, 1 << 20).unwrap().unwrap();
            assert_eq!(back, frame, "{len}");
            assert_eq!(used, bytes.len());
            assert_eq!(Frame::decode(&bytes[..bytes.len() - 1], 1 << 20), Ok(None));
        }
        assert_eq!(Frame::decode(&[0x82], 10), Ok(None));
    }

    #[test]
    fn oversized_reserved_and_bad_control_frames_are_refused() {
        let big = Frame::new(BINARY, vec![0u8; 300]).encode(None);
        assert_eq!(
            Frame::decode(&big, 100),
            Err(FrameError::TooLarge { len: 300, max: 100 })
        );
        assert_eq!(
            Frame::decode(&[0xC1, 0x00], 10),
            Err(FrameError::ReservedBits)
        );
        // A fragmented ping.
        assert_eq!(
            Frame::decode(&[0x09, 0x00], 10),
            Err(FrameError::BadControl)
        );
        let long_ping = Frame::new(PING, vec![0u8; 126]).encode(None);
        assert_eq!(Frame::decode(&long_ping, 1000), Err(FrameError::BadControl));
    }
}
