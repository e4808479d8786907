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

impl<S, E, Req> Concern<Req, S> for Timeout<E>
where
    S: Service<Req, Error = E> + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    E: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = E;

    async fn handle(self, req: Req, next: S) -> Result<S::Response, E> {
        tokio::time::timeout(self.after, next.oneshot(req))
            .await
            .map_err(|_| (self.elapsed)(self.after))?
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
        let svc = tower::Layer::layer(&layer(Duration::from_secs(2), Late), sleeper);
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
