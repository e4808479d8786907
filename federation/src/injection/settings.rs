//! The injection settings file (`--injection-config`, rendered by the chart into ConfigMap
//! `mesh-injection` from the `injection.sidecar` values and mounted into the controller): what
//! the injected containers look like. It is read on every admission request, so a changed
//! ConfigMap applies to the next pod without a controller restart, and a missing or broken file
//! makes the webhook answer "allowed, unchanged, with a warning" instead of failing pods.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

/// The sidecar's settings, as the file spells them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct InjectionSettings {
    /// Image of the `mesh` binary for both injected containers (`mesh-init` and `mesh-proxy`).
    #[serde(default)]
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// Resources of both injected containers.
    #[serde(default)]
    pub resources: Resources,
    /// `RUST_LOG` of the sidecar.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Destination ports the capture never redirects (e.g. 443 of the API server).
    #[serde(default)]
    pub exclude_outbound_ports: Vec<u16>,
    /// Destination networks the capture never redirects, `addr/len`.
    #[serde(default)]
    pub exclude_outbound_cidrs: Vec<String>,
    /// Captured connections to destinations outside the mesh: `allow-any` (passed through) or
    /// `registry-only` (refused); the sidecar's `--outbound-policy`.
    #[serde(default = "default_outbound_policy")]
    pub outbound_policy: String,
    /// Captured plaintext from outside the mesh to the app's port: `permissive` (reaches the
    /// app) or `strict` (refused); the sidecar's `--inbound-policy`.
    #[serde(default = "default_inbound_policy")]
    pub inbound_policy: String,
    /// The mesh's VIP range, as the controllers' `--vip-range` (the chart's `dns.vipRange`): a
    /// captured connection to it is for a mesh service.
    #[serde(default = "default_vip_range")]
    pub vip_range: String,
}

fn default_outbound_policy() -> String {
    "allow-any".into()
}

fn default_inbound_policy() -> String {
    "permissive".into()
}

fn default_vip_range() -> String {
    crate::dns::vip::DEFAULT_RANGE.into()
}

fn default_pull_policy() -> String {
    "IfNotPresent".into()
}

fn default_log_level() -> String {
    "info".into()
}

/// Container resources; quantities may be written as YAML numbers (`cpu: 1`) or strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Resources {
    /// Requests by resource name.
    #[serde(default)]
    pub requests: BTreeMap<String, QuantityText>,
    /// Limits by resource name.
    #[serde(default)]
    pub limits: BTreeMap<String, QuantityText>,
}

/// A Kubernetes quantity as text (`100m`, `128Mi`, `1`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum QuantityText {
    /// Written as a string.
    Text(String),
    /// Written as an integer.
    Integer(u64),
    /// Written as a decimal number.
    Decimal(DecimalText),
}

/// A decimal number kept as the text it prints as (f64 is not `Eq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecimalText(String);

impl<'de> Deserialize<'de> for DecimalText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        f64::deserialize(d).map(|f| Self(f.to_string()))
    }
}

impl QuantityText {
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Integer(n) => n.to_string(),
            Self::Decimal(d) => d.0.clone(),
        }
    }
}

impl Resources {
    /// The Kubernetes form; `None` when nothing is set.
    pub(crate) fn requirements(&self) -> Option<ResourceRequirements> {
        if self.requests.is_empty() && self.limits.is_empty() {
            return None;
        }
        let map = |m: &BTreeMap<String, QuantityText>| {
            (!m.is_empty()).then(|| {
                m.iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.text())))
                    .collect()
            })
        };
        Some(ResourceRequirements {
            requests: map(&self.requests),
            limits: map(&self.limits),
            ..ResourceRequirements::default()
        })
    }
}

/// Why the settings cannot be used; names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("injection settings {path}: {reason}")]
pub(crate) struct SettingsError {
    path: String,
    reason: String,
}

#[cfg(test)]
impl SettingsError {
    /// An error as [`InjectionSettings::load`] reports it.
    pub(crate) fn for_test(reason: &str) -> Self {
        Self {
            path: "/etc/mesh/injection/settings.yaml".into(),
            reason: reason.into(),
        }
    }
}

impl InjectionSettings {
    /// Reads and checks the file at `path`.
    pub(crate) async fn load(path: &Path) -> Result<Self, SettingsError> {
        let fail = |reason: String| SettingsError {
            path: path.display().to_string(),
            reason,
        };
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| fail(format!("cannot be read ({e})")))?;
        Self::parse(&text).map_err(fail)
    }

    /// Parses and checks the YAML `text`; the error names the field (and line) that is wrong.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let settings: Self = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), String> {
        if self.image.trim().is_empty() {
            return Err("image is empty: set the chart's injection.sidecar.image (or image.repository), the image of the mesh binary".into());
        }
        if !matches!(
            self.image_pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        ) {
            return Err(format!(
                "imagePullPolicy {:?} must be Always, IfNotPresent or Never",
                self.image_pull_policy
            ));
        }
        if let Some(port) = self.exclude_outbound_ports.iter().find(|p| **p == 0) {
            return Err(format!(
                "excludeOutboundPorts: {port} is not a port (1-65535)"
            ));
        }
        for cidr in &self.exclude_outbound_cidrs {
            check_cidr(cidr).map_err(|e| format!("excludeOutboundCidrs: {e}"))?;
        }
        if !matches!(self.outbound_policy.as_str(), "allow-any" | "registry-only") {
            return Err(format!(
                "outboundPolicy {:?} must be allow-any or registry-only",
                self.outbound_policy
            ));
        }
        if !matches!(self.inbound_policy.as_str(), "permissive" | "strict") {
            return Err(format!(
                "inboundPolicy {:?} must be permissive or strict",
                self.inbound_policy
            ));
        }
        self.vip_range
            .parse::<crate::dns::vip::VipRange>()
            .map_err(|e| format!("vipRange: {e}"))?;
        Ok(())
    }
}

/// The check `mesh init --exclude-outbound-cidrs` applies, done here so that a bad value is
/// reported by the webhook rather than by a pod that cannot start.
fn check_cidr(s: &str) -> Result<(), String> {
    let (addr, len) = s.split_once('/').unwrap_or((s, ""));
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an IP network (expected e.g. 10.0.0.0/8)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if !len.is_empty() && len.parse::<u8>().ok().filter(|l| *l <= max).is_none() {
        return Err(format!("{s:?}: the prefix length must be 0 to {max}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_with_numbers_as_quantities() {
        let s = InjectionSettings::parse(
            "image: mesh:0.1.0\nimagePullPolicy: Never\nlogLevel: debug\n\
             resources: {requests: {cpu: 1, memory: 64Mi}, limits: {cpu: 0.5}}\n\
             excludeOutboundPorts: [443]\nexcludeOutboundCidrs: [10.96.0.1/32]\n",
        )
        .unwrap();
        assert_eq!(s.image, "mesh:0.1.0");
        let r = s.resources.requirements().unwrap();
        assert_eq!(r.requests.unwrap()["cpu"], Quantity("1".into()));
        assert_eq!(r.limits.unwrap()["cpu"], Quantity("0.5".into()));
        assert_eq!(s.exclude_outbound_ports, [443]);
    }

    #[test]
    fn defaults_and_empty_resources() {
        let s = InjectionSettings::parse("image: mesh\n").unwrap();
        assert_eq!(s.image_pull_policy, "IfNotPresent");
        assert_eq!(s.log_level, "info");
        assert!(s.resources.requirements().is_none());
        assert_eq!(
            (s.outbound_policy.as_str(), s.inbound_policy.as_str()),
            ("allow-any", "permissive")
        );
        assert_eq!(s.vip_range, "240.240.0.0/16");
    }

    #[test]
    fn bad_files_name_the_field() {
        for (text, needle) in [
            ("imagePullPolicy: Never\n", "image is empty"),
            ("image: ''\n", "image is empty"),
            ("image: m\nimagePullPolicy: Sometimes\n", "imagePullPolicy"),
            (
                "image: m\nexcludeOutboundPorts: [0]\n",
                "excludeOutboundPorts",
            ),
            (
                "image: m\nexcludeOutboundPorts: [70000]\n",
                "excludeOutboundPorts",
            ),
            (
                "image: m\nexcludeOutboundCidrs: [10.0.0.0/33]\n",
                "excludeOutboundCidrs",
            ),
            ("image: m\nimag: x\n", "imag"),
            ("image: m\noutboundPolicy: open\n", "outboundPolicy"),
            ("image: m\ninboundPolicy: lax\n", "inboundPolicy"),
            ("image: m\nvipRange: 240.240.0.1/16\n", "vipRange"),
        ] {
            let err = InjectionSettings::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
