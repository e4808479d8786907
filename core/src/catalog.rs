//! The exported-service catalog that clusters exchange and its versioned deltas: the model and
//! the messages of the control streams, not who holds them (see [`crate::peer_catalogs`]).
//!
//! Each cluster is authoritative for its own exports. A peer sends a full [`CatalogMessage::Snapshot`]
//! when the link (re)connects, then [`CatalogMessage::Delta`]s that each name the version they
//! apply to; [`ExportCatalog::apply`] turns a catalog into the next version.
//!
//! These are wire messages between clusters that may run different releases (see "Compatibility"
//! in ARCHITECTURE.md): decoders ignore fields they do not know, so a later release may add
//! fields (with a default for their absence); it may not remove or retype one.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::identity::TrustBundle;
use crate::names::ServiceKey;

/// One endpoint of an exported service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedEndpoint {
    /// Address of the endpoint's sidecar inbound port, as the owning cluster reaches it.
    pub address: SocketAddr,
    /// SPIFFE ID the endpoint's sidecar presents.
    pub identity: String,
    /// Whether the owning cluster considers this endpoint healthy.
    pub healthy: bool,
}

/// An exported service: its endpoints and the owning cluster's verdict on its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedService {
    /// False when the owning cluster's controller has failed this service away from itself
    /// (its sidecars' breakers are open), so peers stop sending it traffic too.
    pub healthy: bool,
    /// Endpoints, sorted by address.
    pub endpoints: Vec<ExportedEndpoint>,
    /// The service's ports, sorted, as its Kubernetes Service names them (what a
    /// `ServiceImport` lists); empty for a service defined only by its endpoints (local mode,
    /// registrations). Added after the first release: absent means empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// When the owner exported the service (its `ServiceExport`'s creation, Unix seconds), so
    /// that the oldest export defines the service when clusters disagree on its ports
    /// (KEP-1645); absent outside Kubernetes. Added after the first release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_since: Option<u64>,
}

/// A port of an exported service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    /// The port's name (`http`; may be empty when the service has one port).
    #[serde(default)]
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port number.
    pub port: u16,
    /// The application protocol (`http`, `kubernetes.io/h2c`), when declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl ExportedService {
    /// Endpoints the owner marks healthy, when the service as a whole is healthy.
    pub fn healthy_endpoints(&self) -> usize {
        if !self.healthy {
            return 0;
        }
        self.endpoints.iter().filter(|e| e.healthy).count()
    }
}

/// A cluster's catalog of exported services at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCatalog {
    /// The owning cluster.
    pub cluster: String,
    /// Monotonic version, bumped on every change.
    pub version: u64,
    /// Services by key.
    pub services: BTreeMap<ServiceKey, ExportedService>,
    /// The owner's trust as it announces it to its peers. Added after the first release:
    /// absent from an older peer, which then neither announces nor acknowledges bundles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<CatalogTrust>,
}

/// What a cluster tells its peers about trust on the link, so a root rotation reaches them
/// without `mesh link` being run again: its own bundle (a receiver takes it for this
/// cluster's trust domain only, see [`crate::identity::rotation::accept_peer_bundle`]) and
/// the roots it holds for each linked trust domain (the acknowledgement a rotating cluster
/// waits for).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogTrust {
    /// The owner's trust bundle: every root it trusts for its own domain.
    pub bundle: Option<TrustBundle>,
    /// Per linked trust domain, the fingerprints of the roots the owner holds for it, sorted
    /// ([`crate::identity::rotation::bundle_fingerprints`]).
    #[serde(default)]
    pub held_roots: BTreeMap<String, Vec<String>>,
}

/// The changes between two versions of one cluster's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDelta {
    /// The owning cluster.
    pub cluster: String,
    /// The version this delta applies to.
    pub from_version: u64,
    /// The version after applying it.
    pub to_version: u64,
    /// Services added or changed (whole service entries).
    pub upserts: BTreeMap<ServiceKey, ExportedService>,
    /// Services no longer exported.
    pub removals: Vec<ServiceKey>,
    /// The owner's trust, when it changed (added after the first release; absent: unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<CatalogTrust>,
}

/// What flows on a control stream from the owning cluster to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CatalogMessage {
    /// The whole catalog.
    Snapshot {
        /// The catalog.
        catalog: ExportCatalog,
    },
    /// Changes since `from_version`.
    Delta {
        /// The changes.
        delta: CatalogDelta,
    },
    /// Sent back by a receiver that cannot apply a delta: the owner replies with a snapshot.
    ResyncRequest,
    /// A kind of message added by a later release. Receivers ignore it: a release may only add
    /// kinds that a peer can skip without losing catalog state (a hint, a heartbeat), because
    /// the previous release must keep federating with it. A kind that must be understood needs
    /// a new major version of the control stream (a new ALPN), not a new variant here.
    #[serde(other)]
    Unknown,
}

impl CatalogMessage {
    /// Short label of the message kind, for metrics and logs.
    pub fn kind_label(&self) -> &'static str {
        match self {
            CatalogMessage::Snapshot { .. } => "snapshot",
            CatalogMessage::Delta { .. } => "delta",
            CatalogMessage::ResyncRequest => "resync_request",
            CatalogMessage::Unknown => "unknown",
        }
    }
}

/// Why a message could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A delta whose base version is not the one held: the receiver needs a snapshot.
    #[error(
        "delta from {cluster} applies to version {from} but version {held:?} is held; a snapshot is needed"
    )]
    VersionGap {
        /// The peer.
        cluster: String,
        /// The delta's base.
        from: u64,
        /// What is held, if anything.
        held: Option<u64>,
    },
    /// A message from a cluster other than the link's peer.
    #[error("catalog message names cluster {got} but arrived on the link to {expected}")]
    WrongCluster {
        /// The link's peer.
        expected: String,
        /// The cluster the message named.
        got: String,
    },
    /// A resync request is not something a catalog can apply.
    #[error("a resync request is answered by the sender, not applied")]
    NotApplicable,
}

impl ExportCatalog {
    /// An empty catalog of `cluster` at version 0.
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            version: 0,
            services: BTreeMap::new(),
            trust: None,
        }
    }

    /// The delta that turns `self` into `newer` (both of the same cluster).
    pub fn diff(&self, newer: &ExportCatalog) -> CatalogDelta {
        let upserts = newer
            .services
            .iter()
            .filter(|(k, v)| self.services.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let removals = self
            .services
            .keys()
            .filter(|k| !newer.services.contains_key(*k))
            .cloned()
            .collect();
        CatalogDelta {
            cluster: newer.cluster.clone(),
            from_version: self.version,
            to_version: newer.version,
            upserts,
            removals,
            trust: (newer.trust != self.trust)
                .then(|| newer.trust.clone())
                .flatten(),
        }
    }

    /// Applies a delta whose base is this catalog's version.
    pub fn apply(&mut self, delta: &CatalogDelta) -> Result<(), CatalogError> {
        if delta.cluster != self.cluster {
            return Err(CatalogError::WrongCluster {
                expected: self.cluster.clone(),
                got: delta.cluster.clone(),
            });
        }
        if delta.from_version != self.version {
            return Err(CatalogError::VersionGap {
                cluster: delta.cluster.clone(),
                from: delta.from_version,
                held: Some(self.version),
            });
        }
        for key in &delta.removals {
            self.services.remove(key);
        }
        for (key, svc) in &delta.upserts {
            self.services.insert(key.clone(), svc.clone());
        }
        if let Some(trust) = &delta.trust {
            self.trust = Some(trust.clone());
        }
        self.version = delta.to_version;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ep(port: u16, healthy: bool) -> ExportedEndpoint {
        ExportedEndpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            identity: "spiffe://eu-central.mesh/ns/demo/sa/echo".into(),
            healthy,
        }
    }

    pub(crate) fn catalog(
        version: u64,
        services: &[(&str, Vec<ExportedEndpoint>)],
    ) -> ExportCatalog {
        ExportCatalog {
            trust: None,
            cluster: "eu-central".into(),
            version,
            services: services
                .iter()
                .map(|(k, eps)| {
                    let svc = ExportedService {
                        healthy: true,
                        endpoints: eps.clone(),
                        ports: Vec::new(),
                        exported_since: None,
                    };
                    (k.parse().unwrap(), svc)
                })
                .collect(),
        }
    }

    #[test]
    fn diff_then_apply_reaches_the_newer_catalog() {
        let v1 = catalog(
            1,
            &[
                ("echo.demo", vec![ep(1, true)]),
                ("old.demo", vec![ep(2, true)]),
            ],
        );
        let v2 = catalog(
            2,
            &[
                ("echo.demo", vec![ep(1, true), ep(3, true)]),
                ("new.demo", vec![]),
            ],
        );
        let delta = v1.diff(&v2);
        assert_eq!(delta.removals, vec!["old.demo".parse().unwrap()]);
        assert_eq!(delta.upserts.len(), 2);
        let mut held = v1.clone();
        held.apply(&delta).unwrap();
        assert_eq!(held, v2);
    }

    #[test]
    fn trust_travels_in_deltas_and_an_unchanged_one_is_not_resent() {
        let v1 = catalog(1, &[("echo.demo", vec![ep(1, true)])]);
        let mut v2 = v1.clone();
        v2.version = 2;
        v2.trust = Some(CatalogTrust {
            bundle: None,
            held_roots: BTreeMap::from([("us-east.mesh".into(), vec!["ab".into(), "cd".into()])]),
        });
        let delta = v1.diff(&v2);
        assert_eq!(delta.trust, v2.trust);
        let mut held = v1.clone();
        held.apply(&delta).unwrap();
        assert_eq!(held, v2);
        // A later change without a trust change carries none, and the held trust stays.
        let mut v3 = v2.clone();
        v3.version = 3;
        v3.services.clear();
        let delta = v2.diff(&v3);
        assert_eq!(delta.trust, None);
        held.apply(&delta).unwrap();
        assert_eq!(held, v3);
        // Without the field (a previous release), a catalog decodes with no trust.
        let old = r#"{"cluster": "eu-central", "version": 1, "services": {}}"#;
        assert_eq!(
            serde_json::from_str::<ExportCatalog>(old).unwrap().trust,
            None
        );
        let json = serde_json::to_value(&v1).unwrap();
        assert!(json.get("trust").is_none(), "absent trust is not sent");
    }

    #[test]
    fn healthy_endpoint_count_honours_the_service_verdict() {
        let mut svc = ExportedService {
            healthy: true,
            endpoints: vec![ep(1, true), ep(2, false)],
            ports: Vec::new(),
            exported_since: None,
        };
        assert_eq!(svc.healthy_endpoints(), 1);
        svc.healthy = false;
        assert_eq!(svc.healthy_endpoints(), 0);
    }

    #[test]
    fn messages_have_a_stable_json_form() {
        let json = serde_json::to_value(CatalogMessage::ResyncRequest).unwrap();
        assert_eq!(json, serde_json::json!({"type": "resync_request"}));
        let snap = CatalogMessage::Snapshot {
            catalog: catalog(4, &[("echo.demo", vec![ep(9, true)])]),
        };
        let back: CatalogMessage =
            serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();
        assert_eq!(back, snap);
    }

    #[test]
    fn messages_of_the_next_release_decode_with_their_additions_ignored() {
        // A snapshot as a later release might send it: a field added at every level.
        let snap = r#"{"type": "snapshot", "origin_epoch": 7, "catalog": {
            "cluster": "eu-central", "version": 4, "generation": "b",
            "services": {"echo.demo": {"healthy": true, "weight": 3, "endpoints": [
                {"address": "127.0.0.1:9", "identity": "spiffe://eu-central.mesh/ns/demo/sa/echo",
                 "healthy": true, "zone": "eu-central-1a"}]}}}}"#;
        let expected = CatalogMessage::Snapshot {
            catalog: catalog(4, &[("echo.demo", vec![ep(9, true)])]),
        };
        assert_eq!(
            serde_json::from_str::<CatalogMessage>(snap).unwrap(),
            expected
        );

        let delta = r#"{"type": "delta", "delta": {"cluster": "eu-central", "from_version": 4,
            "to_version": 5, "upserts": {}, "removals": ["echo.demo"], "reason": "drained"}}"#;
        let CatalogMessage::Delta { delta } = serde_json::from_str(delta).unwrap() else {
            panic!("a delta with an added field is still a delta");
        };
        assert_eq!((delta.from_version, delta.to_version), (4, 5));

        // A kind this release does not know, with or without a body, is recognisably unknown.
        for unknown in [
            r#"{"type": "heartbeat"}"#,
            r#"{"type": "load_hint", "share": 0.5}"#,
        ] {
            let msg: CatalogMessage = serde_json::from_str(unknown).unwrap();
            assert_eq!(msg, CatalogMessage::Unknown, "{unknown}");
            assert_eq!(msg.kind_label(), "unknown");
        }

        // Tolerance is for additions only: a field this release needs must still be there.
        let missing = r#"{"type": "delta", "delta": {"cluster": "eu-central", "to_version": 5,
            "upserts": {}, "removals": []}}"#;
        assert!(serde_json::from_str::<CatalogMessage>(missing).is_err());
    }
}
