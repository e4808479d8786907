//! The mesh's Kubernetes objects and the client they are read and written with.
//!
//! - [`link`]: our `Link` custom resource (`links.mesh.dev`), one per peer cluster, written by
//!   `mesh link` and reconciled by the controller, which reports its `Ready` condition and RTT.
//! - [`mcs`]: the Multi-Cluster Services API objects (`ServiceExport`, `ServiceImport`, group
//!   `multicluster.x-k8s.io`), field for field as upstream `sigs.k8s.io/mcs-api` v0.5.2 defines
//!   them (the CRDs themselves ship in the chart, copied from that module).
//! - [`policy`]: the traffic policy objects: the Gateway API's `HTTPRoute` and our policy kinds
//!   (`FaultPolicy`, `RateLimitPolicy`, `CachePolicy`, `BackendPolicy`), specs kept as JSON.
//! - [`names`]: the well-known names every part agrees on (objects the controller owns in its
//!   namespace, labels, annotations, the field manager), so the chart, the controller, `mesh link`
//!   and `mesh check` cannot drift apart.
//! - [`conditions`]: setting a status condition the way Kubernetes API conventions say.
//! - [`check`]: `mesh check` of clusters through their API servers.
//! - [`client`]: a client from a kubeconfig file, a context, or the pod's in-cluster config.
//! - [`link_info`]: the cluster's link information as its controller publishes it.
//! - [`linking`]: `mesh link` / `mesh unlink` between two clusters' API servers.

pub mod check;
pub mod client;
pub mod conditions;
pub mod link;
pub mod link_info;
pub mod linking;
pub mod mcs;
pub mod names;
pub mod policy;

pub use k8s_openapi;
pub use kube;
