//! The traffic policy source of local mode: the files given with `--policy`, read at start and
//! re-read when they change (polled every [`POLL`]: a content comparison, so editors that
//! replace the file are seen as well as those that write in place). Each version is compiled
//! against the services the controller knows, and re-compiled when that set changes (a route
//! may name a service that registers later). A version with any error is refused as a whole:
//! every error is logged with file, line and reason, shown by `GET /v1/policy`, and the last
//! good policy stays in force. A good version is put in the published view, so sidecars get it
//! with their next snapshot, without restarting anything.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::names::ServiceKey;
use mesh_core::policy::compile::compile_known;
use mesh_core::policy::documents::{PolicyObject, parse_documents};
use tokio::sync::watch;

use crate::controller::Controller;
pub use crate::policy_board::PolicyReport;
use crate::policy_board::{PolicyBoard, put_in_force};

/// How often the files are compared with their last version: often enough that an edit takes
/// effect well within a second, cheap for files of a few KiB.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// Documents per file at most, so that the creation order of one file's documents stays below
/// the next file's.
const ORDER_STRIDE: i64 = 1_000_000;

/// What one version of the files compiles to: the objects, or why they cannot be read.
fn read_files(paths: &[PathBuf]) -> Result<Vec<PolicyObject>, Vec<String>> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => match parse_documents(&text, &file, i as i64 * ORDER_STRIDE) {
                Ok(docs) => objects.extend(docs),
                Err(e) => errors.push(e.to_string()),
            },
            Err(e) => errors.push(format!("{file}: cannot read: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

/// Checks every file once (for `mesh up` before it starts anything): syntax, kinds and fields;
/// references are resolved later, against the running cluster-set.
pub fn check_files(paths: &[PathBuf]) -> Result<usize, Vec<String>> {
    read_files(paths).map(|o| o.len())
}

/// Watches `paths` until shutdown, putting each good version in force.
pub(crate) async fn watch_files(
    controller: Arc<Controller>,
    board: Arc<PolicyBoard>,
    paths: Vec<PathBuf>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen: Option<(Vec<Option<String>>, BTreeSet<ServiceKey>)> = None;
    loop {
        let texts: Vec<Option<String>> = paths
            .iter()
            .map(|p| std::fs::read_to_string(p).ok())
            .collect();
        let known = controller.read(|state, _| state.known_services());
        let now = (texts, known);
        if seen.as_ref() != Some(&now) {
            evaluate(&controller, &board, &paths, &now.1);
            seen = Some(now);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Compiles the files as they are now and puts them in force, or refuses them.
fn evaluate(
    controller: &Controller,
    board: &PolicyBoard,
    paths: &[PathBuf],
    known: &BTreeSet<ServiceKey>,
) {
    let compiled = read_files(paths).map(|objects| compile_known(&objects, known));
    let errors = match &compiled {
        Err(errors) => errors.clone(),
        Ok(c) => c.errors.iter().map(ToString::to_string).collect(),
    };
    if !errors.is_empty() {
        let repeated = board.report().refused == errors;
        if !repeated {
            for e in &errors {
                tracing::warn!(error = %e, "policy refused; the last good policy stays in force");
            }
        }
        board.update(|r| r.refused = errors);
        return;
    }
    let Ok(compiled) = compiled else { return };
    put_in_force(controller, board, compiled, Vec::new());
}
