//! Load: the open-loop schedule (the one pacing every load generator of the workspace uses,
//! `mesh-bench` included), the driver that sends a scenario's requests on it, its HTTP client and
//! the per-request outcome record.

mod client;
mod driver;
mod outcome;
pub mod schedule;

pub use client::{Answer, Entry, ProxyClient};
pub use driver::{
    HEADER_ECHO_BODY_SHA256, HEADER_ECHO_CLUSTER, HEADER_ECHO_DIGEST, HEADER_ECHO_REPLICA,
    HEADER_REQUEST_ID, LoadDriver, LoadResult, body_for,
};
pub use outcome::{DigestCheck, Outcome, Wire};

#[cfg(test)]
mod tests;
