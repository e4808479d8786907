//! Injecting and healing each fault action against a running cluster-set.

use std::time::Duration;

use http::Method;
use mesh_core::api::PATH_LINKS;
use mesh_launcher::admin_client::{self, AdminTokens};
use mesh_launcher::cluster_set::Signal;
use mesh_launcher::link::{link_info, unlink_pair};

use super::env::RunEnv;
use crate::error::ChaosError;
use crate::scenario::{EndpointBehaviour, Fault, ProcessRef};

/// Demo-app admin path of injected faults.
const PATH_FAULTS: &str = "/v1/faults";
/// How long link set-up may wait for a peer's gateway to report.
const LINK_WAIT: Duration = Duration::from_secs(20);
/// How long `mesh ca rotate` may wait for each step of a root rotation.
const ROTATION_STEP_TIMEOUT: &str = "3m";

fn fail(id: &str, reason: impl std::fmt::Display) -> ChaosError {
    ChaosError::Fault {
        id: id.to_string(),
        reason: reason.to_string(),
    }
}

fn admin_of(env: &RunEnv, cluster: &str, id: &str) -> Result<std::net::SocketAddr, ChaosError> {
    env.set
        .as_ref()
        .and_then(|s| s.cluster(cluster))
        .and_then(|c| c.controller_admin())
        .ok_or_else(|| fail(id, format!("no controller admin address for {cluster}")))
}

/// Links `a` and `b` both ways, each through the impairment relay towards the other when there
/// is one.
pub(crate) async fn link_via_relays(
    env: &RunEnv,
    a: &str,
    b: &str,
    id: &str,
) -> Result<(), ChaosError> {
    let (aa, ba) = (admin_of(env, a, id)?, admin_of(env, b, id)?);
    let mut ia = link_info(aa, LINK_WAIT).await.map_err(|e| fail(id, e))?;
    let mut ib = link_info(ba, LINK_WAIT).await.map_err(|e| fail(id, e))?;
    if let Some(r) = env.relays.get(&(a.to_string(), b.to_string())) {
        ib.gateway_addr = r.local_addr();
    }
    if let Some(r) = env.relays.get(&(b.to_string(), a.to_string())) {
        ia.gateway_addr = r.local_addr();
    }
    let tokens = AdminTokens::in_state_dir(&env.state_dir);
    let ta = tokens.token_for(aa, a).map_err(|e| fail(id, e))?;
    let tb = tokens.token_for(ba, b).map_err(|e| fail(id, e))?;
    admin_client::send_json_with(aa, Some(&ta), Method::POST, PATH_LINKS, &ib)
        .await
        .map_err(|e| fail(id, e))?;
    admin_client::send_json_with(ba, Some(&tb), Method::POST, PATH_LINKS, &ia)
        .await
        .map_err(|e| fail(id, e))?;
    Ok(())
}

async fn set_endpoint(
    env: &RunEnv,
    targets: &[ProcessRef],
    b: Option<EndpointBehaviour>,
    id: &str,
) -> Result<(), ChaosError> {
    for t in targets {
        let admin = env
            .addr(t, "admin")
            .ok_or_else(|| fail(id, format!("{t} has no admin address")))?;
        set_endpoint_at(admin, b)
            .await
            .map_err(|e| fail(id, format!("{t}: {e}")))?;
    }
    Ok(())
}

async fn set_endpoint_at(
    admin: std::net::SocketAddr,
    b: Option<EndpointBehaviour>,
) -> Result<(), admin_client::AdminError> {
    match b {
        Some(b) => {
            let body = serde_json::json!({
                "error_share": b.error_share,
                "latency_ms": b.latency.as_millis() as u64,
                "latency_share": b.latency_share,
            });
            admin_client::send_json(admin, Method::POST, PATH_FAULTS, &body)
                .await
                .map(|_| ())
        }
        None => admin_client::call(admin, Method::DELETE, PATH_FAULTS, None)
            .await
            .map(|_| ()),
    }
}

/// Injects fault `id`.
pub(crate) async fn inject(env: &mut RunEnv, id: &str, fault: &Fault) -> Result<(), ChaosError> {
    tracing::info!(fault = id, action = fault.name(), "injecting");
    match fault {
        Fault::Kill { targets } => {
            let set = env.set.as_mut().ok_or_else(|| fail(id, "no cluster-set"))?;
            for t in targets {
                set.kill(&t.cluster, &t.process)
                    .await
                    .map_err(|e| fail(id, e))?;
            }
        }
        Fault::Freeze { targets } => {
            let set = env.set.as_ref().ok_or_else(|| fail(id, "no cluster-set"))?;
            for t in targets {
                set.signal(&t.cluster, &t.process, Signal::Stop)
                    .map_err(|e| fail(id, e))?;
            }
        }
        Fault::RollingRestart { targets, pause } => {
            let mesh_bin = env.mesh_bin.clone();
            for (i, t) in targets.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(*pause).await;
                }
                let p = env
                    .process_mut(t)
                    .ok_or_else(|| fail(id, format!("no process {t}")))?;
                // Graceful: SIGTERM and wait, as a rollout would, then start on the same addresses.
                p.stop().await;
                p.start(&mesh_bin).await.map_err(|e| fail(id, e))?;
                env.note_pids();
            }
        }
        Fault::Partition { a, b, direction } => {
            let net = env
                .net
                .as_mut()
                .ok_or_else(|| fail(id, "partitions need network namespaces"))?;
            net.partition(id, a, b, *direction)
                .map_err(|e| fail(id, e))?;
        }
        Fault::WanLoss { cluster, share } => {
            let net = env
                .net
                .as_mut()
                .ok_or_else(|| fail(id, "WAN loss needs network namespaces"))?;
            net.wan_loss(id, cluster, *share).map_err(|e| fail(id, e))?;
        }
        Fault::Impair { a, b, impairment } => {
            for key in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
                env.relays
                    .get(&key)
                    .ok_or_else(|| fail(id, format!("no relay {}->{}", key.0, key.1)))?
                    .impair(*impairment);
            }
        }
        Fault::Endpoint { targets, behaviour } => {
            set_endpoint(env, targets, Some(*behaviour), id).await?
        }
        Fault::Flap { targets, down, up } => {
            let mut admins = Vec::new();
            for t in targets {
                admins.push(
                    env.addr(t, "admin")
                        .ok_or_else(|| fail(id, format!("{t} has no admin address")))?,
                );
            }
            let (down, up) = (*down, *up);
            let failing = EndpointBehaviour {
                error_share: 1.0,
                ..EndpointBehaviour::default()
            };
            let task = tokio::spawn(async move {
                loop {
                    for a in &admins {
                        if let Err(e) = set_endpoint_at(*a, Some(failing)).await {
                            tracing::warn!(error = %e, "flap: could not make the endpoint fail");
                        }
                    }
                    tokio::time::sleep(down).await;
                    for a in &admins {
                        if let Err(e) = set_endpoint_at(*a, None).await {
                            tracing::warn!(error = %e, "flap: could not restore the endpoint");
                        }
                    }
                    tokio::time::sleep(up).await;
                }
            });
            env.tasks.insert(id.to_string(), task);
        }
        Fault::Unlink { a, b } => {
            let tokens = AdminTokens::in_state_dir(&env.state_dir);
            unlink_pair(admin_of(env, a, id)?, admin_of(env, b, id)?, &tokens)
                .await
                .map_err(|e| fail(id, e))?;
        }
        Fault::RotateRoot { cluster } => rotate_root(env, cluster, id).await?,
    }
    Ok(())
}

/// Runs `mesh ca rotate` against `cluster`'s controller until the rotation is complete.
async fn rotate_root(env: &RunEnv, cluster: &str, id: &str) -> Result<(), ChaosError> {
    let admin = admin_of(env, cluster, id)?;
    let out = tokio::process::Command::new(&env.mesh_bin)
        .args(["ca", "rotate", "--cluster", cluster])
        .args(["--timeout", ROTATION_STEP_TIMEOUT])
        .arg("--admin")
        .arg(admin.to_string())
        .arg("--state-dir")
        .arg(&env.state_dir)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| fail(id, format!("{}: {e}", env.mesh_bin.display())))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(fail(
            id,
            format!(
                "mesh ca rotate --cluster {cluster} failed: {}",
                printed.trim()
            ),
        ));
    }
    for line in printed.lines() {
        tracing::info!(fault = id, "{line}");
    }
    Ok(())
}

/// Heals fault `id`.
pub(crate) async fn heal(env: &mut RunEnv, id: &str, fault: &Fault) -> Result<(), ChaosError> {
    tracing::info!(fault = id, action = fault.name(), "healing");
    match fault {
        Fault::Kill { targets } => {
            let set = env.set.as_mut().ok_or_else(|| fail(id, "no cluster-set"))?;
            for t in targets {
                set.restart(&t.cluster, &t.process)
                    .await
                    .map_err(|e| fail(id, e))?;
            }
            env.note_pids();
        }
        Fault::Freeze { targets } => {
            let set = env.set.as_ref().ok_or_else(|| fail(id, "no cluster-set"))?;
            for t in targets {
                set.signal(&t.cluster, &t.process, Signal::Cont)
                    .map_err(|e| fail(id, e))?;
            }
        }
        Fault::RollingRestart { .. } => {}
        Fault::Partition { .. } | Fault::WanLoss { .. } => {
            let net = env
                .net
                .as_mut()
                .ok_or_else(|| fail(id, "no network namespaces"))?;
            net.heal(id).map_err(|e| fail(id, e))?;
        }
        Fault::Impair { a, b, .. } => {
            for key in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
                if let Some(r) = env.relays.get(&key) {
                    r.clear();
                }
            }
        }
        Fault::Endpoint { targets, .. } => set_endpoint(env, targets, None, id).await?,
        Fault::Flap { targets, .. } => {
            if let Some(t) = env.tasks.remove(id) {
                t.abort();
            }
            set_endpoint(env, targets, None, id).await?;
        }
        Fault::Unlink { a, b } => link_via_relays(env, a, b, id).await?,
        Fault::RotateRoot { .. } => {}
    }
    Ok(())
}
