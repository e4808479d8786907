//! SLO evaluation: pure functions over recorded outcomes and the scenario's timeline.

pub mod analysis;
mod eval;

pub use eval::{RunFacts, SloResult, Verdict, evaluate, not_run, phase_bounds};
