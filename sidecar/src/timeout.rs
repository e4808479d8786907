//! The timeout layer of both directions: bounds a call of the inner service until its response
//! head, failing it with the direction's own timeout error. Outbound it bounds each try (below
//! `balance`, so a timed-out try counts against the endpoint it went to, and below `retry`, so
//! the request may go on elsewhere); inbound it bounds the app.

use std::time::Duration;

use tower::{Service, ServiceExt};

use crate::stack::{Concern, ConcernLayer};

/// The timeout layer: each call gets `after`; one still running then fails with
/// `elapsed(after)`, the direction's own timeout error.
pub fn layer<E>(after: Duration, elapsed: fn(Duration) -> E) -> ConcernLayer<Timeout<E>> {
    ConcernLayer(Timeout { after, elapsed })
}

/// Fails a call whose layers below have not answered in time.
#[derive(Debug)]
pub struct Timeout<E> {
    after: Duration,
    elapsed: fn(Duration) -> E,
}

impl<E> Clone for Timeout<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Timeout<E> {}

/// Request (outbound): the bound of each try when the request's route sets one
/// (`timeouts.backendRequest`), instead of the sidecar's. Set by `route`; read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryTimeout(pub Duration);

impl<S, E, B> Concern<http::Request<B>, S> for Timeout<E>
where
    S: Service<http::Request<B>, Error = E> + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    E: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = E;

    async fn handle(self, req: http::Request<B>, next: S) -> Result<S::Response, E> {
        let after = req
            .extensions()
            .get::<TryTimeout>()
            .map_or(self.after, |t| t.0);
        if after.is_zero() {
            // `0s` turns the bound off (Gateway API).
            return next.oneshot(req).await;
        }
        tokio::time::timeout(after, next.oneshot(req))
            .await
            .map_err(|_| (self.elapsed)(after))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Late(Duration);

    #[tokio::test(start_paused = true)]
    async fn a_call_slower_than_the_bound_fails_at_the_bound() {
        let sleeper = tower::service_fn(|req: http::Request<Duration>| async move {
            let delay = *req.body();
            tokio::time::sleep(delay).await;
            Ok::<_, Late>(delay)
        });
        let svc = tower::Layer::layer(&layer(Duration::from_secs(2), Late), sleeper);
        let started = tokio::time::Instant::now();
        let err = svc
            .clone()
            .oneshot(http::Request::new(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert_eq!(err, Late(Duration::from_secs(2)));
        assert_eq!(started.elapsed(), Duration::from_secs(2));

        let started = tokio::time::Instant::now();
        let ok = svc
            .oneshot(http::Request::new(Duration::from_millis(1999)))
            .await
            .unwrap();
        assert_eq!(ok, Duration::from_millis(1999));
        assert_eq!(started.elapsed(), Duration::from_millis(1999));
    }
}
