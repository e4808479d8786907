//! The timeout layer of both directions: bounds a call of the inner service until its response
//! head, failing it with the direction's own timeout error. Outbound it bounds each try (below
//! `balance`, so a timed-out try counts against the endpoint it went to, and below `retry`, so
//! the request may go on elsewhere); inbound it bounds the app.

use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt};

use crate::stack::BoxFuture;

/// Adds [`Timeout`] to a stack.
#[derive(Debug)]
pub struct TimeoutLayer<E> {
    after: Duration,
    elapsed: fn(Duration) -> E,
}

impl<E> Clone for TimeoutLayer<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for TimeoutLayer<E> {}

impl<E> TimeoutLayer<E> {
    /// Gives each call `after`; a call still running then fails with `elapsed(after)`.
    pub fn new(after: Duration, elapsed: fn(Duration) -> E) -> Self {
        Self { after, elapsed }
    }
}

impl<S, E> Layer<S> for TimeoutLayer<E> {
    type Service = Timeout<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            after: self.after,
            elapsed: self.elapsed,
        }
    }
}

/// Fails a call whose inner service has not answered in time.
#[derive(Debug)]
pub struct Timeout<S, E> {
    inner: S,
    after: Duration,
    elapsed: fn(Duration) -> E,
}

impl<S: Clone, E> Clone for Timeout<S, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            after: self.after,
            elapsed: self.elapsed,
        }
    }
}

impl<S, E, Req> Service<Req> for Timeout<S, E>
where
    S: Service<Req, Error = E> + Clone + Send + 'static,
    S::Future: Send + 'static,
    E: 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = E;
    type Future = BoxFuture<Result<S::Response, E>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let after = self.after;
        let elapsed = self.elapsed;
        let answer = self.inner.clone().oneshot(req);
        Box::pin(async move {
            tokio::time::timeout(after, answer)
                .await
                .map_err(|_| elapsed(after))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Late(Duration);

    #[tokio::test(start_paused = true)]
    async fn a_call_slower_than_the_bound_fails_at_the_bound() {
        let sleeper = tower::service_fn(|delay: Duration| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Late>(delay)
        });
        let svc = TimeoutLayer::new(Duration::from_secs(2), Late).layer(sleeper);
        let started = tokio::time::Instant::now();
        let err = svc
            .clone()
            .oneshot(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err, Late(Duration::from_secs(2)));
        assert_eq!(started.elapsed(), Duration::from_secs(2));

        let started = tokio::time::Instant::now();
        let ok = svc.oneshot(Duration::from_millis(1999)).await.unwrap();
        assert_eq!(ok, Duration::from_millis(1999));
        assert_eq!(started.elapsed(), Duration::from_millis(1999));
    }
}
