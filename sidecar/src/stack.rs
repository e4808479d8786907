//! What the layers of both stacks are made of. Each concern of a request is one `tower`
//! [`Layer`](tower::Layer) and [`Service`](tower::Service) in its own module, with its own unit
//! tests; each direction's stack is assembled in exactly one function:
//! [`crate::outbound::stack::outbound_stack`] and [`crate::inbound::stack::inbound_stack`].
//! What a layer learns for another travels in [`crate::facts`].
//!
//! Every service of the stacks is always ready (back-pressure is the listeners' and the pools'
//! business), so a layer calls a clone of its inner service and never waits in `poll_ready`.

use std::pin::Pin;

/// The future a layer's service returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
