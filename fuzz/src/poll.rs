//! Runs a future that cannot wait (it reads from a byte slice) to completion without a runtime.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// The output of `fut`, which must complete on its first poll.
pub(crate) fn ready<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a future over an in-memory input waited"),
    }
}
