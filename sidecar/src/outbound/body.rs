//! Request bodies that can be sent again, and response bodies that keep the endpoint's
//! in-flight count while they stream.
//!
//! A body of known length up to 64 KiB is read into memory so a retry can resend it. Anything
//! else streams through once: larger bodies (never held whole in memory) and bodies of unknown
//! length, which may belong to a streaming exchange where the app waits for an answer before it
//! finishes sending. A streamed body is still retried after a connect failure, because the
//! connection is obtained before the body is handed over.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use mesh_core::http::{BoxBody, BoxError, full, read_body};

use super::balancer::InFlight;

/// Largest request body held in memory for retries.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// A request body and whether it can be sent again.
pub enum ReplayBody {
    /// Held in memory: sent again on every try.
    Buffered(Bytes),
    /// Streams once; `None` once handed over.
    Streaming(Option<BoxBody>),
}

impl ReplayBody {
    /// Buffers `body` when its length is known and small, else keeps it for streaming.
    pub async fn read<B>(body: B) -> Result<Self, BoxError>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            return Ok(Self::Buffered(Bytes::new()));
        }
        match body.size_hint().exact() {
            Some(len) if len <= MAX_BUFFERED_BODY => {
                let limit = usize::try_from(len).unwrap_or(usize::MAX);
                let bytes = read_body(body, limit).await?;
                Ok(Self::Buffered(bytes))
            }
            _ => Ok(Self::Streaming(Some(body.map_err(Into::into).boxed()))),
        }
    }

    /// Whether the body is held in memory (small, of known length): a try's time then says how
    /// fast the endpoint answers, not how fast the app uploads.
    pub fn is_buffered(&self) -> bool {
        matches!(self, Self::Buffered(_))
    }

    /// Whether the body can still be sent.
    pub fn available(&self) -> bool {
        match self {
            Self::Buffered(_) => true,
            Self::Streaming(body) => body.is_some(),
        }
    }

    /// The body for one try; `None` when a streamed body was already sent.
    pub fn take(&mut self) -> Option<BoxBody> {
        match self {
            Self::Buffered(bytes) => Some(full(bytes.clone())),
            Self::Streaming(body) => body.take(),
        }
    }

    /// Returns a body that was not sent (the connection failed before the request went out).
    pub fn put_back(&mut self, body: BoxBody) {
        if let Self::Streaming(slot) = self {
            *slot = Some(body);
        }
    }
}

/// The request body as each try sees it: a handle on the request's one [`ReplayBody`], shared
/// by the retry layer (which asks whether another try can still send it) and the connector
/// (which takes it only once it holds a connection, and puts it back if the request was not
/// sent).
#[derive(Clone)]
pub struct TryBody(Arc<Mutex<ReplayBody>>);

impl TryBody {
    /// A handle on `body`.
    pub fn new(body: ReplayBody) -> Self {
        Self(Arc::new(Mutex::new(body)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayBody> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See [`ReplayBody::is_buffered`].
    pub fn is_buffered(&self) -> bool {
        self.lock().is_buffered()
    }

    /// See [`ReplayBody::available`].
    pub fn available(&self) -> bool {
        self.lock().available()
    }

    /// See [`ReplayBody::take`].
    pub fn take(&self) -> Option<BoxBody> {
        self.lock().take()
    }

    /// See [`ReplayBody::put_back`].
    pub fn put_back(&self, body: BoxBody) {
        self.lock().put_back(body)
    }
}

/// A response body that holds the endpoint's in-flight count until it ends or is dropped, so
/// the balancer sees long downloads as load.
pub struct InFlightBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> InFlightBody<B> {
    /// Wraps `inner`, holding `in_flight` as long as it lives.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
