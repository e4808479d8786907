//! Real Kubernetes API servers for tests: each simulated cluster is an `etcd` and a
//! `kube-apiserver` process on loopback, with its own PKI and an admin kubeconfig.
//!
//! The binaries are built from the Go module in `tools/k8s-testenv/` the first time a test needs
//! them (once, under a file lock), so `cargo test` on a fresh machine needs only Go. There is no
//! kubelet, scheduler or controller-manager: Pods never run, and nothing generates EndpointSlices
//! or ServiceAccounts; tests write those objects themselves.
//!
//! It also builds CoreDNS the same way ([`ensure_coredns`]), for the tests and benchmarks of
//! the mesh's DNS behind a real cluster DNS.
//!
//! This crate only starts, probes and stops clusters. It knows nothing about the mesh.

#![forbid(unsafe_code)]

mod binaries;
mod cluster;
mod error;
mod pki;
mod probe;
mod run_dir;
mod spawn;
mod test_env;

pub use binaries::{Binaries, ensure_binaries, ensure_coredns};
pub use cluster::Cluster;
pub use error::Error;
pub use test_env::{TestEnv, shared};
