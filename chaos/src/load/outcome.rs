//! What happened to one request: the record every SLO is computed from.

use std::time::Duration;

use serde::Serialize;

/// Whether an echoed body came back intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestCheck {
    /// No body was sent, or no echo came back (failed request).
    NotChecked,
    /// The app saw, and the client got back, exactly the bytes sent.
    Match,
    /// Some bytes changed on the way.
    Mismatch,
}

/// The HTTP version one request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Wire {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
}

/// One request's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Request id (also sent as `x-request-id`), in send order.
    pub id: u64,
    /// When it was due, from the load's start (open loop: the schedule, not the actual send).
    #[serde(serialize_with = "as_millis")]
    pub scheduled: Duration,
    /// From due time to the end of the answer (so a stalled sender cannot hide latency).
    #[serde(serialize_with = "as_millis")]
    pub latency: Duration,
    /// HTTP version used.
    pub wire: Wire,
    /// Response status, if a response came.
    pub status: Option<u16>,
    /// The cluster that served it (`x-mesh-cluster`).
    pub served_by: Option<String>,
    /// The demo replica that answered (`x-echo-replica`).
    pub replica: Option<String>,
    /// Why it failed (transport error, timeout, mesh error), if it did.
    pub error: Option<String>,
    /// Body integrity.
    pub digest: DigestCheck,
}

impl Outcome {
    /// A 2xx answer with an intact body.
    pub fn ok(&self) -> bool {
        self.error.is_none()
            && self.status.is_some_and(|s| (200..300).contains(&s))
            && self.digest != DigestCheck::Mismatch
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}
