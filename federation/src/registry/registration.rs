//! The registration backend: sidecars `PUT` their workload every second; a registration that
//! is not renewed within the TTL expires, and `DELETE` removes it at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_core::api::WorkloadRegistration;
use mesh_core::identity::SpiffeId;

use super::{RegistryEndpoint, ServiceRegistry};

/// Longest workload id accepted.
const MAX_ID_LEN: usize = 253;

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RegistrationError {
    /// The registration itself is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not register or remove this workload.
    #[error("{0}")]
    NotAllowed(String),
    /// Another identity holds this workload id.
    #[error("{0}")]
    Taken(String),
    /// No such registration.
    #[error("workload {0} is not registered")]
    Unknown(String),
}

#[derive(Debug, Clone)]
struct Entry {
    registration: WorkloadRegistration,
    renewed: Instant,
}

/// Workloads registered through the control API.
#[derive(Debug)]
pub(crate) struct Registrations {
    cluster: String,
    trust_domain: String,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Registrations {
    /// An empty backend for `cluster` whose entries live `ttl` after each renewal.
    pub(crate) fn new(cluster: &str, trust_domain: &str, ttl: Duration) -> Self {
        Self {
            cluster: cluster.to_string(),
            trust_domain: trust_domain.to_string(),
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers or renews `reg` (sent to `PUT /v1/workloads/{path_id}`) for `caller`; true
    /// when the workload was not registered (or registered elsewhere) before.
    pub(crate) fn register(
        &self,
        path_id: &str,
        reg: WorkloadRegistration,
        caller: &SpiffeId,
        now: Instant,
    ) -> Result<bool, RegistrationError> {
        self.validate(path_id, &reg, caller)?;
        let mut entries = self.entries();
        if let Some(old) = entries.get(&reg.id)
            && now.duration_since(old.renewed) < self.ttl
            && old.registration.identity != reg.identity
        {
            return Err(RegistrationError::Taken(format!(
                "workload id {} is registered by {}; pick a unique id per workload",
                reg.id, old.registration.identity
            )));
        }
        let new = entries.get(&reg.id).is_none_or(|old| {
            now.duration_since(old.renewed) >= self.ttl
                || old.registration.address != reg.address
                || old.registration.service != reg.service
        });
        entries.insert(
            reg.id.clone(),
            Entry {
                registration: reg,
                renewed: now,
            },
        );
        Ok(new)
    }

    fn validate(
        &self,
        path_id: &str,
        reg: &WorkloadRegistration,
        caller: &SpiffeId,
    ) -> Result<(), RegistrationError> {
        let invalid = |m: String| Err(RegistrationError::Invalid(m));
        check_id(path_id)?;
        if reg.id != path_id {
            return invalid(format!(
                "the body registers workload {} but the path names {path_id}",
                reg.id
            ));
        }
        if reg.cluster != self.cluster {
            return invalid(format!(
                "workload {} says it runs in cluster {}, but this controller serves {}",
                reg.id, reg.cluster, self.cluster
            ));
        }
        if reg.address.ip().is_unspecified() || reg.address.port() == 0 {
            return invalid(format!(
                "address {} of workload {} is not reachable: use the sidecar's bound inbound \
                 address, not a wildcard or port 0",
                reg.address, reg.id
            ));
        }
        let id: SpiffeId = reg
            .identity
            .parse()
            .map_err(|e| RegistrationError::Invalid(format!("identity: {e}")))?;
        if id.trust_domain != self.trust_domain {
            return invalid(format!(
                "identity {id} is outside this cluster's trust domain {}",
                self.trust_domain
            ));
        }
        if id != *caller {
            return Err(RegistrationError::NotAllowed(format!(
                "a sidecar can only register its own identity: the request names {id} but the \
                 client certificate is {caller}"
            )));
        }
        Ok(())
    }

    /// Removes workload `id`, which only its own identity may do.
    pub(crate) fn remove(&self, id: &str, caller: &SpiffeId) -> Result<(), RegistrationError> {
        let mut entries = self.entries();
        let Some(entry) = entries.get(id) else {
            return Err(RegistrationError::Unknown(id.to_string()));
        };
        if entry.registration.identity != caller.to_string() {
            return Err(RegistrationError::NotAllowed(format!(
                "workload {id} is registered by {}, not by {caller}",
                entry.registration.identity
            )));
        }
        entries.remove(id);
        Ok(())
    }

    /// Drops the registrations not renewed within the TTL; returns their ids.
    pub(crate) fn expire(&self, now: Instant) -> Vec<String> {
        let mut entries = self.entries();
        let expired: Vec<String> = entries
            .iter()
            .filter(|(_, e)| now.duration_since(e.renewed) >= self.ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for id in &expired {
            entries.remove(id);
        }
        expired
    }

    /// Live registrations at `now`.
    pub(crate) fn count(&self, now: Instant) -> usize {
        self.entries()
            .values()
            .filter(|e| now.duration_since(e.renewed) < self.ttl)
            .count()
    }
}

impl ServiceRegistry for Registrations {
    fn name(&self) -> &str {
        "registrations"
    }

    fn endpoints(&self, now: Instant) -> Vec<RegistryEndpoint> {
        self.entries()
            .values()
            .filter(|e| now.duration_since(e.renewed) < self.ttl)
            .map(|e| RegistryEndpoint {
                service: e.registration.service.clone(),
                address: e.registration.address,
                identity: e.registration.identity.clone(),
                healthy: e.registration.healthy,
                plaintext: false,
                spec: None,
            })
            .collect()
    }
}

/// Workload ids are path segments: letters, digits, `.`, `_` and `-`.
fn check_id(id: &str) -> Result<(), RegistrationError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RegistrationError::Invalid(format!(
            "workload id `{id}` must be 1 to {MAX_ID_LEN} letters, digits, '.', '_' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn caller() -> SpiffeId {
        SpiffeId::workload("us-east.mesh", "demo", "echo")
    }

    fn reg(id: &str, port: u16) -> WorkloadRegistration {
        WorkloadRegistration {
            id: id.into(),
            service: "echo.demo".parse().unwrap(),
            cluster: "us-east".into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            identity: caller().to_string(),
            healthy: true,
        }
    }

    fn backend() -> Registrations {
        Registrations::new("us-east", "us-east.mesh", Duration::from_secs(3))
    }

    #[test]
    fn registrations_expire_without_heartbeats() {
        let t0 = Instant::now();
        let r = backend();
        r.register("echo-0", reg("echo-0", 9000), &caller(), t0)
            .unwrap();
        r.register("echo-1", reg("echo-1", 9001), &caller(), t0)
            .unwrap();
        assert_eq!(r.endpoints(t0 + Duration::from_secs(2)).len(), 2);
        r.register(
            "echo-1",
            reg("echo-1", 9001),
            &caller(),
            t0 + Duration::from_secs(2),
        )
        .unwrap();
        let t3 = t0 + Duration::from_secs(3);
        let live = r.endpoints(t3);
        assert_eq!(live.len(), 1, "echo-0 expired from the view at once");
        assert_eq!(live[0].address.port(), 9001);
        assert_eq!(r.expire(t3), vec!["echo-0".to_string()]);
        assert_eq!(r.count(t3), 1);
    }

    #[test]
    fn insane_registrations_are_refused_with_a_reason() {
        let r = backend();
        let now = Instant::now();
        let mut other_cluster = reg("a", 1);
        other_cluster.cluster = "eu-central".into();
        let mut wildcard = reg("a", 1);
        wildcard.address = "0.0.0.0:80".parse().unwrap();
        let mut port0 = reg("a", 0);
        port0.id = "a".into();
        let mut foreign = reg("a", 1);
        foreign.identity = "spiffe://eu-central.mesh/ns/demo/sa/echo".into();
        let mut bad_identity = reg("a", 1);
        bad_identity.identity = "echo".into();
        for (case, want) in [
            (other_cluster, "this controller serves us-east"),
            (wildcard, "not reachable"),
            (port0, "not reachable"),
            (foreign, "outside this cluster's trust domain"),
            (bad_identity, "not a SPIFFE ID"),
        ] {
            let err = r.register("a", case, &caller(), now).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        let err = r.register("b", reg("a", 1), &caller(), now).unwrap_err();
        assert!(err.to_string().contains("path names b"), "{err}");
        let err = r
            .register("a/b", reg("a/b", 1), &caller(), now)
            .unwrap_err();
        assert!(matches!(err, RegistrationError::Invalid(_)));
        assert_eq!(r.count(now), 0);
    }

    #[test]
    fn only_the_owner_identity_registers_renews_or_removes() {
        let r = backend();
        let now = Instant::now();
        let intruder = SpiffeId::workload("us-east.mesh", "demo", "intruder");
        let err = r
            .register("echo-0", reg("echo-0", 1), &intruder, now)
            .unwrap_err();
        assert!(matches!(err, RegistrationError::NotAllowed(_)), "{err}");
        r.register("echo-0", reg("echo-0", 1), &caller(), now)
            .unwrap();
        let mut hijack = reg("echo-0", 2);
        hijack.identity = intruder.to_string();
        let err = r.register("echo-0", hijack, &intruder, now).unwrap_err();
        assert!(matches!(err, RegistrationError::Taken(_)), "{err}");
        assert!(matches!(
            r.remove("echo-0", &intruder),
            Err(RegistrationError::NotAllowed(_))
        ));
        r.remove("echo-0", &caller()).unwrap();
        assert!(matches!(
            r.remove("echo-0", &caller()),
            Err(RegistrationError::Unknown(_))
        ));
    }
}
