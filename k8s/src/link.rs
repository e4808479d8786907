//! `Link` (`links.mesh.dev/v1alpha1`, cluster-scoped): this cluster is linked with the peer the
//! object names. `mesh link` writes one in each of the two clusters, naming the other; the
//! controller trusts the peer's bundle, lets its gateway peer with the peer's, and reports in
//! `status` whether the link works (`Ready`), why not, and the measured round-trip time.

use std::net::SocketAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use mesh_core::api::LinkInfo;
use mesh_core::identity::TrustBundle;
use mesh_core::names::check_label;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `Ready` condition type of a link.
pub const READY: &str = "Ready";

/// A link to one peer cluster. The object's name is the peer's cluster name.
// Each `printcolumn(...)` is one column; clippy reads their repeated `type_` as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mesh.dev",
    version = "v1alpha1",
    kind = "Link",
    status = "LinkStatus",
    shortname = "meshlink",
    category = "mesh",
    doc = "A link from this cluster to a peer cluster of the mesh, written by `mesh link`.",
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Gateway", type_ = "string", json_path = ".spec.gatewayAddress"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "RTT", type_ = "string", json_path = ".status.rtt"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LinkSpec {
    /// The peer's cluster name (a DNS label); equal to the object's name.
    pub cluster: String,
    /// The peer's region, for failover priority.
    pub region: String,
    /// Where the peer's gateway accepts QUIC links (`ip:port`).
    pub gateway_address: String,
    /// The peer's trust bundle: identities it signs are trusted for this link only.
    pub trust_bundle: LinkTrustBundle,
}

/// A peer's roots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkTrustBundle {
    /// The peer's SPIFFE trust domain (`<cluster>.mesh`).
    pub trust_domain: String,
    /// Its root certificate(s), PEM.
    pub ca_pem: String,
}

/// What the controller saw of a link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    /// `Ready`: the link is accepted and the peer's gateway is connected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Round-trip time to the peer's gateway as last measured (`3.2ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt: Option<String>,
    /// The last error seen on this link, kept after it clears until the link is ready again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Why a `Link` cannot be used; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Link {name}: {reason}")]
pub struct InvalidLink {
    /// The object's name.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

impl LinkSpec {
    /// The spec for `info`.
    pub fn from_info(info: &LinkInfo) -> Self {
        Self {
            cluster: info.cluster.clone(),
            region: info.region.clone(),
            gateway_address: info.gateway_addr.to_string(),
            trust_bundle: LinkTrustBundle {
                trust_domain: info.trust_bundle.trust_domain.clone(),
                ca_pem: info.trust_bundle.ca_pem.clone(),
            },
        }
    }

    /// The link information the spec of the object `name` holds, checked for shape (the trust
    /// bundle's certificates are parsed when the link is added).
    pub fn to_info(&self, name: &str) -> Result<LinkInfo, InvalidLink> {
        let invalid = |reason: String| InvalidLink {
            name: name.to_string(),
            reason,
        };
        check_label(&self.cluster).map_err(|e| invalid(format!("spec.cluster: {e}")))?;
        if self.cluster != name {
            return Err(invalid(format!(
                "spec.cluster is {} but the object is named {name}; a Link is named after the peer cluster",
                self.cluster
            )));
        }
        check_label(&self.region).map_err(|e| invalid(format!("spec.region: {e}")))?;
        let gateway_addr: SocketAddr = self.gateway_address.parse().map_err(|_| {
            invalid(format!(
                "spec.gatewayAddress {:?} is not ip:port (the peer gateway's advertised QUIC address)",
                self.gateway_address
            ))
        })?;
        Ok(LinkInfo {
            cluster: self.cluster.clone(),
            region: self.region.clone(),
            trust_bundle: TrustBundle {
                trust_domain: self.trust_bundle.trust_domain.clone(),
                cluster: self.cluster.clone(),
                ca_pem: self.trust_bundle.ca_pem.clone(),
            },
            gateway_addr,
        })
    }
}

/// The `Link` for the peer `info` describes.
pub fn link_for(info: &LinkInfo) -> Link {
    Link::new(&info.cluster, LinkSpec::from_info(info))
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    fn info() -> LinkInfo {
        LinkInfo {
            cluster: "eu-west".into(),
            region: "eu".into(),
            trust_bundle: TrustBundle {
                trust_domain: "eu-west.mesh".into(),
                cluster: "eu-west".into(),
                ca_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
            },
            gateway_addr: "192.0.2.7:15443".parse().unwrap(),
        }
    }

    #[test]
    fn spec_round_trips_link_info() {
        let link = link_for(&info());
        assert_eq!(link.metadata.name.as_deref(), Some("eu-west"));
        assert_eq!(link.spec.to_info("eu-west").unwrap(), info());
    }

    #[test]
    fn bad_specs_name_the_field() {
        let mut spec = LinkSpec::from_info(&info());
        assert!(
            spec.to_info("us-east")
                .unwrap_err()
                .reason
                .contains("named after the peer")
        );
        spec.gateway_address = "gateway.example:443x".into();
        let err = spec.to_info("eu-west").unwrap_err().to_string();
        assert!(
            err.starts_with("Link eu-west: spec.gatewayAddress"),
            "{err}"
        );
        spec.gateway_address = "192.0.2.7:15443".into();
        spec.region = "EU_1".into();
        assert!(
            spec.to_info("eu-west")
                .unwrap_err()
                .reason
                .starts_with("spec.region")
        );
    }

    /// The chart ships the CRD generated from these types; this keeps the file true.
    /// `UPDATE_CRDS=1 cargo test -p mesh-k8s` rewrites it after a change.
    #[test]
    fn chart_crd_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/mesh/crds/mesh.dev_links.yaml");
        let generated = format!(
            "# Generated from k8s/src/link.rs (`UPDATE_CRDS=1 cargo test -p mesh-k8s`); do not edit.\n{}",
            serde_saphyr::to_string(&Link::crd()).expect("CRD serialises")
        );
        if std::env::var_os("UPDATE_CRDS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            shipped == generated,
            "{} differs from the Link type: run `UPDATE_CRDS=1 cargo test -p mesh-k8s`",
            path.display()
        );
    }
}
