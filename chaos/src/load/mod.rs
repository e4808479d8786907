//! Load: the open-loop driver, its HTTP client and the per-request outcome record.

mod client;
mod driver;
mod outcome;

pub use client::{Answer, ProxyClient};
pub use driver::{
    HEADER_ECHO_BODY_SHA256, HEADER_ECHO_CLUSTER, HEADER_ECHO_DIGEST, HEADER_ECHO_REPLICA,
    HEADER_REQUEST_ID, LoadDriver, LoadResult, body_for,
};
pub use outcome::{DigestCheck, Outcome, Wire};

#[cfg(test)]
mod tests;
