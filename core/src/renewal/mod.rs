//! Certificate rotation: every component renews its certificate before it expires.
//!
//! - `schedule.rs`: when (a share of the lifetime, default 2/3, ±10% jitter; pure);
//! - `task.rs`: the loop (sleep, issue, swap into the [`crate::identity::RotatingIdentity`],
//!   retry with backoff and keep the old certificate on failure) and the [`Issuer`] trait;
//! - `controller.rs`: issuing through the controller's CA path, authenticated by the current
//!   certificate (sidecars, gateways), with the join token as the way back after an expiry;
//! - `status.rs`: `mesh_certificate_expiry_seconds`, `mesh_certificate_renewals_total{result}`
//!   and the `/readyz` condition.
//!
//! Lifetimes down to 10 s work (tests use 30 s); a minute is the practical floor for real
//! clusters, since every renewal is a CSR signed by the controller.

mod controller;
mod schedule;
mod status;
mod task;

pub use controller::{ControllerIssuer, TokenFallback};
pub use schedule::{
    DEFAULT_RENEW_AT, DEFAULT_RENEW_AT_FLAG, JITTER_SHARE, LATEST_SHARE, RETRY_MAX, RETRY_MIN,
    RenewAt, draw_jitter, renewal_time, retry_backoff,
};
pub use status::{READINESS_CONDITION, RenewalStatus, describe_expiry};
pub use task::{IssueFuture, Issuer, Renewer};
