//! What a component shows about its certificate: `mesh_certificate_expiry_seconds` (computed at
//! each scrape from the current certificate), `mesh_certificate_renewals_total{result}`, the
//! last renewal error, and the `certificate` condition of `/readyz` (still ready while the
//! certificate is valid, not ready once it has expired).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::admin::Readiness;
use crate::identity::{RotatingIdentity, Validity};

/// The `/readyz` condition the renewal reports under.
pub const READINESS_CONDITION: &str = "certificate";

/// Labels of the renewal counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// `success` or `failure`.
    result: &'static str,
}

/// The expiry gauge, computed from the current certificate at each scrape.
#[derive(Debug)]
struct ExpiryGauge {
    identity: RotatingIdentity,
}

impl prometheus_client::collector::Collector for ExpiryGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let remaining = self
            .identity
            .validity()
            .remaining(SystemTime::now())
            .as_secs_f64();
        let mut metric = encoder.encode_descriptor(
            "mesh_certificate_expiry_seconds",
            "Seconds until the certificate this component presents expires",
            None,
            MetricType::Gauge,
        )?;
        let labels = vec![("identity", self.identity.id().to_string())];
        ConstGauge::new(remaining).encode(metric.encode_family(&labels)?)
    }
}

/// Renewal outcomes and the last error, shared by the renewal task and whoever reports them.
#[derive(Debug, Clone)]
pub struct RenewalStatus {
    identity: RotatingIdentity,
    renewals: Family<ResultLabels, Counter>,
    last_error: Arc<Mutex<Option<String>>>,
    readiness: Option<Readiness>,
}

impl RenewalStatus {
    /// A status for `identity`, its metrics registered in `registry`, reporting to
    /// `readiness` when given.
    pub fn register(
        registry: &mut Registry,
        identity: &RotatingIdentity,
        readiness: Option<Readiness>,
    ) -> Self {
        let status = Self {
            identity: identity.clone(),
            renewals: Family::default(),
            last_error: Arc::default(),
            readiness,
        };
        registry.register(
            "mesh_certificate_renewals",
            "Certificate renewals of this component, by result",
            status.renewals.clone(),
        );
        registry.register_collector(Box::new(ExpiryGauge {
            identity: identity.clone(),
        }));
        status
    }

    /// The last renewal error, while renewal is failing.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many renewals ended with `result` (`success`, `failure`).
    pub fn renewals(&self, result: &'static str) -> u64 {
        self.renewals.get_or_create(&ResultLabels { result }).get()
    }

    /// Records a renewal that succeeded: the error and the readiness condition are cleared.
    pub fn succeeded(&self) {
        self.renewals
            .get_or_create(&ResultLabels { result: "success" })
            .inc();
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(r) = &self.readiness {
            r.set_condition(READINESS_CONDITION, None);
        }
    }

    /// Records a failed renewal at `now`: kept as the last error and shown in `/readyz`
    /// (ready while the current certificate is valid). Returns the line shown.
    pub fn failed(&self, error: &str, now: SystemTime) -> String {
        self.renewals
            .get_or_create(&ResultLabels { result: "failure" })
            .inc();
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
        self.refresh(now).unwrap_or_default()
    }

    /// Re-evaluates the readiness condition at `now` (an expiry while renewal keeps failing
    /// makes the component not ready). Returns the detail line, if renewal is failing.
    pub fn refresh(&self, now: SystemTime) -> Option<String> {
        let error = self.last_error()?;
        let validity = self.identity.validity();
        let line = format!(
            "certificate renewal failing: {error}; the certificate of {} {}",
            self.identity.id(),
            describe_expiry(validity, now)
        );
        if let Some(r) = &self.readiness {
            r.set_condition(
                READINESS_CONDITION,
                Some((!validity.expired(now), line.clone())),
            );
        }
        Some(line)
    }
}

/// "expires in 12s" or "expired 3s ago".
pub fn describe_expiry(validity: Validity, now: SystemTime) -> String {
    match validity.not_after.duration_since(now) {
        Ok(left) if !left.is_zero() => format!("expires in {}s", left.as_secs()),
        _ => format!(
            "expired {}s ago",
            now.duration_since(validity.not_after)
                .unwrap_or_default()
                .as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::{ClusterCa, SpiffeId};

    fn identity(secs: u64) -> RotatingIdentity {
        let ca = ClusterCa::generate("us-east.mesh").unwrap();
        let id = SpiffeId::gateway("us-east.mesh");
        RotatingIdentity::new(ca.issue(&id, Duration::from_secs(secs)).unwrap()).unwrap()
    }

    fn metrics_text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn metrics_show_the_expiry_and_the_renewals() {
        let mut registry = Registry::default();
        let id = identity(600);
        let status = RenewalStatus::register(&mut registry, &id, None);
        status.succeeded();
        status.failed("controller unreachable", SystemTime::now());
        let text = metrics_text(&registry);
        assert!(
            text.contains("mesh_certificate_renewals_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mesh_certificate_renewals_total{result=\"failure\"} 1"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(
                    "mesh_certificate_expiry_seconds{identity=\"spiffe://us-east.mesh/gateway\"}",
                )
            })
            .unwrap_or_else(|| panic!("{text}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((590.0..=600.0).contains(&value), "{line}");
    }

    #[test]
    fn readiness_holds_while_valid_and_drops_once_expired() {
        let readiness = Readiness::default();
        readiness.set(true);
        let id = identity(60);
        let status =
            RenewalStatus::register(&mut Registry::default(), &id, Some(readiness.clone()));
        let now = SystemTime::now();
        let line = status.failed("controller at 127.0.0.1:1: connection refused", now);
        assert!(
            readiness.get(),
            "a failing renewal with a valid certificate stays ready"
        );
        assert!(
            line.contains("renewal failing: controller at 127.0.0.1:1"),
            "{line}"
        );
        assert!(
            line.contains("spiffe://us-east.mesh/gateway expires in"),
            "{line}"
        );
        assert_eq!(readiness.detail().as_deref(), Some(line.as_str()));

        let later = id.validity().not_after + Duration::from_secs(3);
        let line = status.refresh(later).unwrap();
        assert!(!readiness.get(), "an expired certificate is not ready");
        assert!(line.contains("expired 3s ago"), "{line}");

        status.succeeded();
        assert!(readiness.get());
        assert_eq!(readiness.detail(), None);
        assert_eq!(status.last_error(), None);
        assert_eq!(status.refresh(later), None);
    }
}
