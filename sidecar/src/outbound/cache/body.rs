//! Buffering an answer's body to store it, up to a bound: a body that ends within the bound is
//! returned whole; one that passes it (or carries trailers, which the store does not keep, or
//! fails) is handed back unchanged as what was read followed by the rest, still streaming.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use mesh_core::http::{BoxBody, BoxError};

/// A body read for storing.
#[derive(Debug)]
pub(super) enum Buffered {
    /// The whole body, within the bound.
    Complete(Bytes),
    /// Not storable: the same bytes, frames and end as the original body.
    Streaming(BoxBody),
}

/// Reads `body` until it ends or holds more than `limit` bytes.
pub(super) async fn buffer(mut body: BoxBody, limit: u64) -> Buffered {
    let mut read = BytesMut::new();
    loop {
        let pending = match body.frame().await {
            None => return Buffered::Complete(read.freeze()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if (read.len() + data.len()) as u64 <= limit => {
                    read.extend_from_slice(&data);
                    continue;
                }
                Ok(data) => Ok(Frame::data(data)),
                Err(trailers) => Ok(trailers),
            },
            Some(Err(e)) => Err(e),
        };
        return Buffered::Streaming(
            Prefixed {
                read: Some(read.freeze()).filter(|b| !b.is_empty()),
                pending: Some(pending),
                rest: body,
            }
            .boxed(),
        );
    }
}

/// What was read of a body, the frame (or error) that stopped the reading, then the rest.
struct Prefixed {
    read: Option<Bytes>,
    pending: Option<Result<Frame<Bytes>, BoxError>>,
    rest: BoxBody,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(read) = self.read.take() {
            return Poll::Ready(Some(Ok(Frame::data(read))));
        }
        if let Some(pending) = self.pending.take() {
            return Poll::Ready(Some(pending));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_none() && self.pending.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.read.as_ref().map_or(0, Bytes::len)
            + match &self.pending {
                Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
                _ => 0,
            };
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + held as u64);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + held as u64);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A body of these frames, in order.
    struct Frames(VecDeque<Result<Frame<Bytes>, BoxError>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    /// A body of `chunks`, then `trailers` if given.
    fn chunked(chunks: &[&'static str], trailers: Option<http::HeaderMap>) -> BoxBody {
        let mut frames: VecDeque<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        frames.extend(trailers.map(|t| Ok(Frame::trailers(t))));
        Frames(frames).boxed()
    }

    #[tokio::test]
    async fn a_body_within_the_bound_is_read_whole() {
        let Buffered::Complete(bytes) = buffer(chunked(&["ab", "cd"], None), 4).await else {
            panic!("within the bound")
        };
        assert_eq!(bytes, "abcd");
    }

    #[tokio::test]
    async fn past_the_bound_the_body_streams_on_unchanged() {
        let Buffered::Streaming(body) = buffer(chunked(&["ab", "cd", "ef"], None), 3).await else {
            panic!("past the bound")
        };
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcdef");
    }

    #[tokio::test]
    async fn trailers_are_passed_on_and_not_stored() {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        let Buffered::Streaming(body) = buffer(chunked(&["ab"], Some(t)), 100).await else {
            panic!("trailers are not stored")
        };
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), "ab");
    }

    #[tokio::test]
    async fn an_error_is_passed_on_after_what_was_read() {
        let frames = VecDeque::from([
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(BoxError::from("upstream reset")),
        ]);
        let Buffered::Streaming(mut body) = buffer(Frames(frames).boxed(), 100).await else {
            panic!("a failed body is not stored")
        };
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "upstream reset");
    }
}
