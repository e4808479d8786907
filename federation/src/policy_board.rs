//! The traffic policy in force, as both sources put it there: the files of local mode
//! (`policy_files`) and the objects of Kubernetes mode (`kubernetes::policy`). A compiled
//! policy goes into the controller's state (so sidecars get it with their next snapshot) and
//! into the report `GET /v1/policy` shows; the sources differ only in what they do with an
//! object whose conditions are false (a file is refused whole; an object is left out).

use std::collections::BTreeMap;
use std::sync::Mutex;

use mesh_core::names::ServiceKey;
use mesh_core::policy::compile::{CompiledPolicy, ObjectStatus};
use mesh_core::policy::service_policy::ServicePolicy;
use serde::Serialize;

use crate::controller::Controller;

/// What `GET /v1/policy` shows: the objects of the policy in force, what it compiled to, and
/// what is wrong.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyReport {
    /// How many versions were put in force.
    pub applied: u64,
    /// The conditions of every object of the policy in force.
    pub objects: Vec<ObjectStatus>,
    /// The compiled policy in force, per service (what sidecars get).
    pub services: BTreeMap<ServiceKey, ServicePolicy>,
    /// Local mode: why the latest version was refused (empty when it is the one in force).
    /// Kubernetes mode: every false condition of the objects in force (those not accepted are
    /// left out; a route whose backend does not resolve applies, that share answering 500),
    /// and the watches of policy kinds that fail.
    pub refused: Vec<String>,
}

/// The report, shared with the admin API.
#[derive(Debug, Default)]
pub(crate) struct PolicyBoard(Mutex<PolicyReport>);

impl PolicyBoard {
    /// The report now.
    pub(crate) fn report(&self) -> PolicyReport {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the report.
    pub(crate) fn update(&self, f: impl FnOnce(&mut PolicyReport)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Puts `compiled`'s services in force and reports its objects, with `problems` (see
/// [`PolicyReport::refused`]); true when the policy in force changed.
pub(crate) fn put_in_force(
    controller: &Controller,
    board: &PolicyBoard,
    compiled: CompiledPolicy,
    problems: Vec<String>,
) -> bool {
    let rules: usize = compiled.services.values().map(|p| p.rules.len()).sum();
    let services = compiled.services.len();
    let in_force = compiled.services.clone();
    let changed = controller.update(|state, _| state.set_policies(compiled.services));
    board.update(|r| {
        r.applied += u64::from(changed);
        r.objects = compiled.statuses;
        r.services = in_force;
        r.refused = problems;
    });
    if changed {
        tracing::info!(rules, services, "policy in force");
    }
    changed
}
