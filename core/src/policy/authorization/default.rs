//! A namespace's default: what its services do with a request when none of their policies is
//! an ALLOW policy. It is set by an `AuthorizationPolicy` on the `Namespace` with `default`
//! and nothing else:
//!
//! ```yaml
//! apiVersion: mesh.dev/v1alpha1
//! kind: AuthorizationPolicy
//! metadata: {name: defaults, namespace: payments}
//! spec:
//!   targetRef: {group: '', kind: Namespace, name: payments}
//!   default: sameCluster
//! ```
//!
//! Chosen over a kind of its own: one kind (one CRD, one `kubectl get authorizationpolicies`)
//! holds everything that decides who may call, and the default names a policy object, which
//! answers, logs and metrics then name as they name the others. Without one, the default is
//! `allow` (Istio's, and the mesh's before policies existed). Two in one namespace conflict:
//! the oldest applies.

use serde::{Deserialize, Serialize};

use crate::identity::SpiffeId;

/// What a namespace's services do when none of their policies is an ALLOW policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthorizationDefault {
    /// Every caller, with an identity or not.
    Allow,
    /// Nobody: only an ALLOW policy admits.
    Deny,
    /// Any caller with a mesh identity: this cluster's or a linked cluster's (the only roots
    /// a sidecar trusts), a workload, gateway or controller.
    Authenticated,
    /// Only callers of this cluster's trust domain.
    SameCluster,
}

impl AuthorizationDefault {
    /// The name as written (`sameCluster`), for answers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Authenticated => "authenticated",
            Self::SameCluster => "sameCluster",
        }
    }

    /// Whether it admits `caller` (`None`: no identity) at a sidecar of `own_trust_domain`.
    pub fn admits(self, caller: Option<&SpiffeId>, own_trust_domain: &str) -> bool {
        match self {
            Self::Allow => true,
            Self::Deny => false,
            Self::Authenticated => caller.is_some(),
            Self::SameCluster => caller.is_some_and(|id| id.trust_domain == own_trust_domain),
        }
    }

    /// Who it admits, in words, for the body of a refusal.
    pub(super) fn admitted(self) -> &'static str {
        match self {
            Self::Allow => "every caller",
            Self::Deny => "nobody without an ALLOW policy",
            Self::Authenticated => "callers with a mesh identity only",
            Self::SameCluster => "callers of this cluster only",
        }
    }
}

/// A namespace's default as sidecars get it, with the policy that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceDefault {
    /// `<namespace>/<name>` of the policy that sets it: what answers, logs and metrics name.
    pub policy: String,
    /// The default.
    pub default: AuthorizationDefault,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_default_admits_its_callers() {
        let east: SpiffeId = "spiffe://us-east.mesh/ns/demo/sa/client".parse().unwrap();
        let west: SpiffeId = "spiffe://us-west.mesh/ns/demo/sa/client".parse().unwrap();
        let gateway: SpiffeId = "spiffe://us-west.mesh/gateway".parse().unwrap();
        let admits = |d: AuthorizationDefault, c: Option<&SpiffeId>| d.admits(c, "us-east.mesh");
        use AuthorizationDefault::*;
        assert!(admits(Allow, None) && admits(Allow, Some(&west)));
        assert!(!admits(Deny, None) && !admits(Deny, Some(&east)));
        assert!(admits(Authenticated, Some(&west)) && admits(Authenticated, Some(&gateway)));
        assert!(!admits(Authenticated, None));
        assert!(admits(SameCluster, Some(&east)));
        assert!(!admits(SameCluster, Some(&west)) && !admits(SameCluster, None));
    }

    #[test]
    fn defaults_read_as_written_and_nothing_else() {
        let read = |s: &str| serde_saphyr::from_str::<AuthorizationDefault>(s);
        for d in ["allow", "deny", "authenticated", "sameCluster"] {
            assert_eq!(read(d).unwrap().as_str(), d);
        }
        for bad in ["same-cluster", "DENY", "audit", ""] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
