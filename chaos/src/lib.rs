//! The chaos suite of `mesh`.
#![forbid(unsafe_code)]

pub mod load;
pub mod relay;
pub mod scenario;
pub mod slo;
