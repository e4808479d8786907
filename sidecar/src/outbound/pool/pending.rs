//! The count of each service's requests waiting in [`super::ConnectionPool::get`], and the
//! guard that holds one place in it: taken before a request waits (refused at once when the
//! service's `limits.maxPendingRequests` is reached), given back when the wait ends, however it
//! ends (a connection, a connect failure, or the request dropped mid-wait).

use std::collections::HashMap;
use std::sync::Mutex;

use mesh_core::names::ServiceKey;
use mesh_core::policy::backend_policy::{LimitExceeded, LimitsSpec};

/// Requests waiting per service. Services with none waiting have no entry, so the map stays
/// as small as the set of services being dialled right now.
#[derive(Debug, Default)]
pub(super) struct PendingCounts(Mutex<HashMap<ServiceKey, u32>>);

impl PendingCounts {
    /// One more waiting request of `service`, or the limit of `limits` it would exceed.
    pub(super) fn enter<'a>(
        &'a self,
        service: &ServiceKey,
        limits: Option<&LimitsSpec>,
    ) -> Result<PendingGuard<'a>, LimitExceeded> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(service.clone()).or_default();
        if let Some(limits) = limits
            && let Err(limit) = limits.may_wait(*count)
        {
            if *count == 0 {
                counts.remove(service);
            }
            return Err(limit);
        }
        *count += 1;
        Ok(PendingGuard {
            counts: self,
            service: service.clone(),
        })
    }

    /// How many requests of `service` are waiting now.
    pub(super) fn get(&self, service: &ServiceKey) -> u32 {
        let counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(service).copied().unwrap_or(0)
    }
}

/// One waiting request's place in its service's count, given back on drop.
#[derive(Debug)]
pub(super) struct PendingGuard<'a> {
    counts: &'a PendingCounts,
    service: ServiceKey,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.service) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.service);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> ServiceKey {
        name.parse().unwrap()
    }

    fn at_most(pending: u32) -> LimitsSpec {
        LimitsSpec {
            max_pending_requests: Some(pending),
            ..LimitsSpec::default()
        }
    }

    #[test]
    fn the_place_past_the_limit_is_refused_and_a_given_back_place_is_free_again() {
        let counts = PendingCounts::default();
        let echo = service("echo.demo");
        let limits = at_most(2);
        let first = counts.enter(&echo, Some(&limits)).unwrap();
        let _second = counts.enter(&echo, Some(&limits)).unwrap();
        assert_eq!(counts.get(&echo), 2);
        let refused = counts.enter(&echo, Some(&limits)).unwrap_err();
        assert_eq!(refused, LimitExceeded::PendingRequests { max: 2 });
        assert_eq!(counts.get(&echo), 2, "a refusal takes no place");
        drop(first);
        assert_eq!(counts.get(&echo), 1);
        assert!(counts.enter(&echo, Some(&limits)).is_ok());
    }

    #[test]
    fn services_count_apart_and_without_limits_nothing_is_refused() {
        let counts = PendingCounts::default();
        let (echo, other) = (service("echo.demo"), service("other.demo"));
        let _echo = counts.enter(&echo, Some(&at_most(1))).unwrap();
        let _other = counts.enter(&other, Some(&at_most(1))).unwrap();
        let unlimited: Vec<_> = (0..100)
            .map(|_| counts.enter(&echo, None).unwrap())
            .collect();
        assert_eq!(counts.get(&echo), 101);
        assert_eq!(counts.get(&other), 1);
        drop(unlimited);
        assert_eq!(counts.get(&echo), 1);
    }

    #[test]
    fn a_service_with_none_waiting_leaves_no_entry() {
        let counts = PendingCounts::default();
        let echo = service("echo.demo");
        drop(counts.enter(&echo, None).unwrap());
        assert!(counts.enter(&echo, Some(&at_most(1))).is_ok());
        assert!(counts.0.lock().unwrap().is_empty());
    }
}
