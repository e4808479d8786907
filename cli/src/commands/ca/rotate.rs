//! `mesh ca rotate`: drives a cluster's root rotation through its controller's admin API
//! (`/v1/ca/rotation`): add, switch, retire, each followed by a wait for what it needs (every
//! linked cluster holding the new bundle, every certificate reissued by the new root), with a
//! timeout. Steps are idempotent and recorded by the controller, so running the command again
//! after a crash (of it or of the controller) resumes where the rotation stands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use mesh_core::identity::rotation::{
    PATH_CA_ROTATION, RotationPhase, RotationRequest, RotationStatus, RotationStep,
};
use mesh_launcher::admin_client::{self, AdminToken, AdminTokens};
use mesh_launcher::cluster_set::read_manifest;

use super::show;

/// How often the controller is asked whether a step is complete.
const POLL: Duration = Duration::from_millis(500);

/// Arguments of `mesh ca rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The cluster whose root to rotate.
    #[arg(long)]
    pub cluster: String,
    /// Its controller's admin address; by default the one the cluster-set `mesh up` runs in
    /// the state directory records.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// State directory of the cluster-set (for the admin address and token).
    #[arg(long, default_value = ".mesh")]
    pub state_dir: PathBuf,
    /// The controller's admin token file (default: `<state-dir>/<cluster>/admin-token`).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Take only this step and wait for it, instead of every step left.
    #[arg(long, value_enum)]
    pub step: Option<RotationStep>,
    /// Show where the rotation stands (the roots, what each linked cluster holds, the
    /// certificates per root, what the phase waits for) and exit.
    #[arg(long, conflicts_with = "step")]
    pub status: bool,
    /// With --status: print JSON.
    #[arg(long, requires = "status")]
    pub json: bool,
    /// How long to wait for each step to complete; past it the command fails with what is
    /// still awaited, and the rotation stays where it is (run the command again to resume).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    pub timeout: Duration,
}

/// The controller of the rotating cluster.
struct Controller {
    cluster: String,
    admin: SocketAddr,
    token: AdminToken,
}

impl Controller {
    fn new(args: &RotateArgs) -> Result<Self, String> {
        mesh_core::names::check_label(&args.cluster).map_err(|e| format!("--cluster: {e}"))?;
        let admin = match args.admin {
            Some(a) => a,
            None => {
                let manifest = read_manifest(&args.state_dir).map_err(|e| {
                    format!(
                        "no --admin given and no running cluster-set in {} ({e}); pass the \
                         controller's admin address with --admin",
                        args.state_dir.display()
                    )
                })?;
                manifest
                    .clusters
                    .iter()
                    .find(|c| c.name == args.cluster)
                    .and_then(|c| c.controller_admin)
                    .ok_or_else(|| {
                        format!(
                            "the cluster-set in {} has no cluster {} with a controller; pass \
                             --admin",
                            args.state_dir.display(),
                            args.cluster
                        )
                    })?
            }
        };
        let mut tokens = AdminTokens::in_state_dir(&args.state_dir);
        if let Some(file) = &args.admin_token_file {
            tokens = tokens.with_file(admin, file);
        }
        let token = tokens
            .token_for(admin, &args.cluster)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            cluster: args.cluster.clone(),
            admin,
            token,
        })
    }

    async fn status(&self) -> Result<RotationStatus, String> {
        let status: RotationStatus = admin_client::get_json(self.admin, PATH_CA_ROTATION)
            .await
            .map_err(|e| e.to_string())?;
        if status.cluster != self.cluster {
            return Err(format!(
                "the controller at {} is cluster {}'s, not {}'s; pass the right --admin",
                self.admin, status.cluster, self.cluster
            ));
        }
        Ok(status)
    }

    async fn take(&self, step: RotationStep) -> Result<RotationStatus, String> {
        let bytes = admin_client::send_json_with(
            self.admin,
            Some(&self.token),
            Method::POST,
            PATH_CA_ROTATION,
            &RotationRequest { step },
        )
        .await
        .map_err(|e| format!("step {}: {e}", step.as_str()))?;
        let status: RotationStatus = serde_json::from_slice(&bytes)
            .map_err(|e| format!("step {}: unexpected answer: {e}", step.as_str()))?;
        println!(
            "{}: step {} taken ({})",
            self.cluster,
            step.as_str(),
            show::roots_line(&status)
        );
        Ok(status)
    }

    /// Polls until the current phase is complete, printing what it waits for when that
    /// changes; fails at `timeout` naming what is still awaited.
    async fn wait_complete(&self, timeout: Duration) -> Result<RotationStatus, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut shown: Vec<String> = Vec::new();
        loop {
            let status = self.status().await?;
            if status.complete() {
                return Ok(status);
            }
            // Printed when what is awaited changes, not when only a countdown moved.
            if gist(&status.waiting_for) != gist(&shown) {
                let phase = show::phase_word(status.phase);
                for wait in &status.waiting_for {
                    println!("{}: {phase}: waiting for {wait}", self.cluster);
                }
                shown = status.waiting_for.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the {} step of cluster {}'s root rotation still waits after {} for: {}; \
                     the rotation stays where it is: run `mesh ca rotate --cluster {}` again \
                     to resume (`--status` shows where it stands)",
                    show::phase_word(status.phase),
                    self.cluster,
                    humantime::format_duration(timeout),
                    status.waiting_for.join("; "),
                    self.cluster
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `waits` without their numbers.
fn gist(waits: &[String]) -> Vec<String> {
    waits
        .iter()
        .map(|w| w.chars().filter(|c| !c.is_ascii_digit()).collect())
        .collect()
}

/// Runs `mesh ca rotate`.
pub(super) async fn run(args: RotateArgs) -> Result<(), String> {
    let controller = Controller::new(&args)?;
    let initial = controller.status().await?;
    if args.status {
        if args.json {
            let json = serde_json::to_string_pretty(&initial).map_err(|e| e.to_string())?;
            println!("{json}");
        } else {
            print!("{}", show::render(&initial));
        }
        return Ok(());
    }
    if let Some(step) = args.step {
        controller.take(step).await?;
        controller.wait_complete(args.timeout).await?;
        println!("{}: step {} complete", controller.cluster, step.as_str());
        return Ok(());
    }
    // A rotation over (or none yet) starts a new one; one in progress is resumed.
    let fresh = match initial.phase {
        None => true,
        Some(RotationPhase::Retired) => initial.complete(),
        Some(_) => false,
    };
    if fresh {
        controller.take(RotationStep::Add).await?;
    } else {
        println!(
            "{}: resuming the rotation in phase {}",
            controller.cluster,
            show::phase_word(initial.phase)
        );
    }
    loop {
        let status = controller.wait_complete(args.timeout).await?;
        match RotationStep::next(status.phase) {
            Some(step) => {
                controller.take(step).await?;
            }
            None => {
                println!(
                    "{}: root rotated: {}",
                    controller.cluster,
                    show::roots_line(&status)
                );
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_countdown_is_not_a_new_wait() {
        let a = vec!["the bundle to reach this cluster's sidecars (2995 ms left)".to_string()];
        let b = vec!["the bundle to reach this cluster's sidecars (1493 ms left)".to_string()];
        assert_eq!(gist(&a), gist(&b));
        assert_ne!(
            gist(&a),
            gist(&["linked cluster us-west to hold both roots".into()])
        );
    }
}
