//! What a connection has in flight, and when it has been idle too long.
//!
//! hyper bounds the HTTP/1 head read but has no idle timeout, and nothing bounds an HTTP/2
//! connection that never sends its preface, SETTINGS or first HEADERS. So each connection
//! counts what it carries: a request from its arrival until its response body is sent or
//! dropped ([`InFlightBody`]), and on HTTP/2 every task hyper spawns for it (a stream being
//! served, or the tunnel of an extended CONNECT: [`CountingExecutor`]). With nothing in flight,
//! a connection that never had a request is closed at the header read timeout, and one that
//! had requests at the idle timeout ([`idle_deadline`], pure).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::limits::ServeLimits;
use crate::http::{BoxBody, BoxError};

/// What a connection carries at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Load {
    /// Requests (and HTTP/2 stream or tunnel tasks) in flight.
    pub in_flight: usize,
    /// Whether any request has arrived on the connection.
    pub served_any: bool,
    /// When the connection last became idle (or was accepted).
    pub idle_since: Instant,
}

/// Why an idle connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdleEnd {
    /// No complete request arrived within the header read timeout.
    NoRequest,
    /// No request in flight for the idle timeout.
    Idle,
}

/// When a connection carrying `load` is to be closed: `None` while something is in flight.
pub(crate) fn idle_deadline(load: Load, limits: &ServeLimits) -> Option<(Instant, IdleEnd)> {
    if load.in_flight > 0 {
        return None;
    }
    Some(if load.served_any {
        (load.idle_since + limits.idle_timeout, IdleEnd::Idle)
    } else {
        (
            load.idle_since + limits.header_read_timeout,
            IdleEnd::NoRequest,
        )
    })
}

/// The load of one connection, shared by its service, executor and watchdog.
#[derive(Debug, Clone)]
pub(crate) struct Activity(Arc<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    load: Mutex<Load>,
    changed: Notify,
}

impl Activity {
    /// A connection accepted at `now`, carrying nothing yet.
    pub(crate) fn new(now: Instant) -> Self {
        Self(Arc::new(ActivityState {
            load: Mutex::new(Load {
                in_flight: 0,
                served_any: false,
                idle_since: now,
            }),
            changed: Notify::new(),
        }))
    }

    fn update(&self, change: impl FnOnce(&mut Load)) {
        change(&mut self.0.load.lock().unwrap_or_else(|p| p.into_inner()));
        self.0.changed.notify_waiters();
    }

    fn load(&self) -> Load {
        *self.0.load.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more thing in flight until the returned guard is dropped.
    pub(crate) fn begin(&self) -> InFlight {
        self.update(|load| {
            load.in_flight += 1;
            load.served_any = true;
        });
        InFlight(self.clone())
    }

    /// Resolves when the connection has been idle past its deadline under `limits`.
    pub(crate) async fn idle(&self, limits: &ServeLimits) -> IdleEnd {
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            // Registered before the load is read, so a change in between still wakes us.
            changed.as_mut().enable();
            match idle_deadline(self.load(), limits) {
                None => changed.await,
                Some((deadline, end)) => {
                    if deadline <= Instant::now() {
                        return end;
                    }
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
            }
        }
    }
}

/// One thing in flight on a connection; dropping it ends it.
#[derive(Debug)]
pub(crate) struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|load| {
            load.in_flight = load.in_flight.saturating_sub(1);
            if load.in_flight == 0 {
                load.idle_since = Instant::now();
            }
        });
    }
}

/// A response body that keeps its request counted in flight until hyper has sent or dropped it.
pub(crate) struct InFlightBody {
    inner: BoxBody,
    _in_flight: InFlight,
}

impl InFlightBody {
    /// `inner`, counted by `in_flight`.
    pub(crate) fn new(inner: BoxBody, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl Body for InFlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// hyper's executor for a connection's HTTP/2 stream tasks (and extended CONNECT tunnels):
/// tokio's, counting each task in flight while it runs.
#[derive(Debug, Clone)]
pub(crate) struct CountingExecutor(pub(crate) Activity);

impl<F> hyper::rt::Executor<F> for CountingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let in_flight = self.0.begin();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            fut.await
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> ServeLimits {
        ServeLimits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            ..ServeLimits::default()
        }
    }

    #[test]
    fn a_connection_without_a_request_ends_at_the_header_timeout() {
        let now = Instant::now();
        let load = Load {
            in_flight: 0,
            served_any: false,
            idle_since: now,
        };
        assert_eq!(
            idle_deadline(load, &limits()),
            Some((now + Duration::from_secs(2), IdleEnd::NoRequest))
        );
    }

    #[test]
    fn a_served_connection_ends_at_the_idle_timeout_and_never_while_busy() {
        let now = Instant::now();
        let idle = Load {
            in_flight: 0,
            served_any: true,
            idle_since: now,
        };
        assert_eq!(
            idle_deadline(idle, &limits()),
            Some((now + Duration::from_secs(60), IdleEnd::Idle))
        );
        let busy = Load {
            in_flight: 1,
            ..idle
        };
        assert_eq!(idle_deadline(busy, &limits()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_the_last_request_to_end() {
        let activity = Activity::new(Instant::now());
        let request = activity.begin();
        let limits = limits();
        let watch = activity.clone();
        let idle = tokio::spawn(async move { watch.idle(&limits).await });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!idle.is_finished(), "busy for 10 minutes, not idle");
        let ended = Instant::now();
        drop(request);
        assert_eq!(idle.await.unwrap(), IdleEnd::Idle);
        assert_eq!(Instant::now() - ended, Duration::from_secs(60));
    }
}
