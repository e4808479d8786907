//! What the layers of both stacks are made of. Each concern of a request is one [`Concern`]
//! in its own module, with its own unit tests: an async function of the request and the rest of
//! the stack below it (`next`), which it calls once, several times (retry) or not at all (an
//! error answered early). [`ConcernLayer`] makes a concern a `tower` layer, so each direction's
//! stack is assembled with `tower::ServiceBuilder` in exactly one function:
//! [`crate::outbound::stack::outbound_service`] and [`crate::inbound::stack::inbound_stack`].
//! What a layer learns for another travels in [`crate::facts`].

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use tower::{Layer, Service};

/// A whole stack over requests with bodies of type `B`: answers every request, never fails
/// (errors are answers), cloned for each connection; the serve loop's bounds.
pub use mesh_core::serve::HttpService as Stack;

/// A whole stack as its listener serves it, over the requests hyper reads.
pub trait HttpStack: Stack<Incoming> {}

impl<T: Stack<Incoming>> HttpStack for T {}

/// The future a layer's service returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One concern of a stack: what it does with a request, given the layers below it.
pub trait Concern<Req, S>: Clone + Send + 'static {
    /// What it answers with.
    type Response;
    /// How it fails.
    type Error;

    /// Handles `req`, calling `next` (the layers below) as often as the concern needs. Each
    /// call of `next` goes through `tower::ServiceExt::oneshot`, which waits for readiness.
    fn handle(
        self,
        req: Req,
        next: S,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> + Send + 'static;
}

/// A [`Concern`] as a `tower` layer.
#[derive(Debug, Clone)]
pub struct ConcernLayer<C>(pub C);

impl<C: Clone, S> Layer<S> for ConcernLayer<C> {
    type Service = WithConcern<C, S>;

    fn layer(&self, next: S) -> Self::Service {
        WithConcern {
            concern: self.0.clone(),
            next,
        }
    }
}

/// The service a concern makes of the layers below it.
#[derive(Debug, Clone)]
pub struct WithConcern<C, S> {
    concern: C,
    next: S,
}

impl<C, S, Req> Service<Req> for WithConcern<C, S>
where
    C: Concern<Req, S>,
    S: Clone,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = BoxFuture<Result<C::Response, C::Error>>;

    /// Always ready: the layers below are asked for readiness when the concern calls them, so
    /// a concern that answers early never waits for them.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        Box::pin(self.concern.clone().handle(req, self.next.clone()))
    }
}
