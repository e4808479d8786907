//! Which mesh service a VIP stands for, asked of the controller (its DNS server handed the VIP
//! out) once and remembered: a VIP never moves to another name once allocated, so an answer is
//! kept for good; "no such VIP" only briefly, as the DNS's negative answers are.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use mesh_core::api::{PATH_VIPS, VipTarget};
use mesh_core::control_client::{ControlClient, ControlError};
use tokio::time::Instant;

use crate::stack::BoxFuture;

/// How long "not a VIP" is believed: the DNS's default TTL, so a VIP handed out since is used
/// as soon as an app can have resolved it.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// At most this many VIPs are remembered; beyond, the cache starts afresh.
const MAX_CACHED: usize = 4096;

/// Where VIPs are looked up: `Ok(None)` when it is no VIP of the mesh, `Err` when the answer
/// could not be had.
pub type VipSource =
    Arc<dyn Fn(IpAddr) -> BoxFuture<Result<Option<VipTarget>, String>> + Send + Sync>;

/// VIP lookups with their cache.
pub struct VipLookup {
    source: VipSource,
    cache: Mutex<HashMap<IpAddr, (Option<VipTarget>, Instant)>>,
}

impl std::fmt::Debug for VipLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VipLookup").finish_non_exhaustive()
    }
}

impl VipLookup {
    /// Lookups against `source`.
    pub fn new(source: VipSource) -> Self {
        Self {
            source,
            cache: Mutex::default(),
        }
    }

    /// Lookups against the controller's `GET /v1/vips/{ip}`.
    pub fn from_controller(client: Arc<ControlClient>) -> Self {
        Self::new(Arc::new(move |ip| {
            let client = client.clone();
            Box::pin(async move {
                let path = format!("{PATH_VIPS}{ip}");
                match client.send_json::<()>(Method::GET, &path, None).await {
                    Ok(body) => serde_json::from_slice(&body)
                        .map(Some)
                        .map_err(|e| format!("the controller's answer for {ip}: {e}")),
                    Err(ControlError::Status {
                        status: StatusCode::NOT_FOUND,
                        ..
                    }) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            })
        }))
    }

    /// The service `ip` stands for.
    pub async fn lookup(&self, ip: IpAddr) -> Result<Option<VipTarget>, String> {
        if let Some((target, until)) = self.lock().get(&ip)
            && (target.is_some() || Instant::now() < *until)
        {
            return Ok(target.clone());
        }
        let target = (self.source)(ip).await?;
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(ip, (target.clone(), Instant::now() + NEGATIVE_TTL));
        Ok(target)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Option<VipTarget>, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting(known: &'static str) -> (VipLookup, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        let lookup = VipLookup::new(Arc::new(move |ip: IpAddr| {
            count.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if ip.to_string() == known {
                    Ok(Some(VipTarget {
                        service: "echo.demo".parse().unwrap(),
                        cluster: None,
                    }))
                } else if ip.is_loopback() {
                    Err("controller unreachable".to_string())
                } else {
                    Ok(None)
                }
            })
        }));
        (lookup, asked)
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn answers_are_kept_and_misses_only_briefly() {
        let (lookup, asked) = counting("240.240.0.5");
        let vip: IpAddr = "240.240.0.5".parse().unwrap();
        let other: IpAddr = "240.240.0.6".parse().unwrap();
        for _ in 0..3 {
            let target = lookup.lookup(vip).await.unwrap().unwrap();
            assert_eq!(target.service.to_string(), "echo.demo");
            assert_eq!(lookup.lookup(other).await.unwrap(), None);
        }
        assert_eq!(asked.load(Ordering::SeqCst), 2, "one question per address");
        tokio::time::advance(NEGATIVE_TTL).await;
        assert_eq!(lookup.lookup(other).await.unwrap(), None);
        assert!(lookup.lookup(vip).await.unwrap().is_some());
        assert_eq!(asked.load(Ordering::SeqCst), 3, "the miss is asked again");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_lookup_is_an_error_and_not_remembered() {
        let (lookup, asked) = counting("240.240.0.5");
        let down: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(lookup.lookup(down).await.is_err());
        assert!(lookup.lookup(down).await.is_err());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }
}
