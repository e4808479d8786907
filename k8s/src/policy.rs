//! The traffic policy objects as the API server holds them: the Gateway API's `HTTPRoute` and
//! `GRPCRoute` (`gateway.networking.k8s.io/v1`, whose CRDs are upstream's, vendored in the
//! chart) and our five policy attachments (`mesh.dev/v1alpha1`: `FaultPolicy`,
//! `RateLimitPolicy`, `CachePolicy`, `BackendPolicy`, `AuthorizationPolicy`), whose CRDs are
//! generated from the types here.
//!
//! Each `spec` is kept as JSON: the controller reads it into `mesh_core`'s spec types per
//! object, so one object with a field the mesh does not know is refused with a status condition
//! naming the field, instead of breaking the watch of every object of its kind (a typed watch
//! fails its whole list on one object it cannot read). For the same reason our CRDs' schemas
//! check only `spec.targetRef` and keep the body's fields as written
//! (`x-kubernetes-preserve-unknown-fields`): the body is validated once, by the same code that
//! checks local policy files, so both modes refuse the same values with the same field path
//! (`spec.total.requestsPerSecond: must be at least 1`), and the CRD cannot drift from it.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The `controllerName` the mesh writes in a route's `status.parents[]` (the Gateway
/// API's domain-prefixed controller name), so other controllers' entries are told apart.
pub const CONTROLLER_NAME: &str = "mesh.dev/controller";

/// Defines a Gateway API route kind as stored: metadata, the `spec` as written (with the API
/// server's defaults) and the `status` every controller writes its parents' entries in.
///
/// Written by hand rather than derived: the CRDs are upstream's, and `spec` and `status` stay
/// JSON (see the module doc).
macro_rules! gateway_route {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $plural:literal, $spec:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            /// The object's metadata.
            pub metadata: ObjectMeta,
            #[doc = concat!("The spec, read per object into `", $spec, "`.")]
            #[serde(default)]
            pub spec: serde_json::Value,
            /// `{parents: [{parentRef, controllerName, conditions}]}`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<serde_json::Value>,
        }

        impl k8s_openapi::Resource for $name {
            const API_VERSION: &'static str = "gateway.networking.k8s.io/v1";
            const GROUP: &'static str = "gateway.networking.k8s.io";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::Metadata for $name {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

gateway_route!(
    /// An `HTTPRoute` as stored.
    HttpRoute,
    "HTTPRoute",
    "httproutes",
    "mesh_core::policy::http_route::HttpRouteSpec"
);

gateway_route!(
    /// A `GRPCRoute` as stored (Gateway API standard channel since v1.1): compiled as the
    /// `HTTPRoute` it means, its status written like an `HTTPRoute`'s.
    GrpcRoute,
    "GRPCRoute",
    "grpcroutes",
    "mesh_core::policy::grpc_route::GrpcRouteSpec"
);

/// The status of each of our policy kinds: `Accepted`, with the reason when it is not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// `Accepted`: the policy applies to its target; `False` with `TargetNotFound`,
    /// `Invalid` or `Conflicted` and a message naming the field when it does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The schema of a policy's `spec`: `targetRef` checked, the body kept as written and
/// validated by the controller (see the module doc).
fn attachment_spec_schema(targets: &str) -> Schema {
    json_schema!({
        "type": "object",
        "description": format!(
            "targetRef names the {targets} the policy applies to, in the policy's namespace; the \
             other fields are the policy's body, validated by the controller, which reports a bad \
             value in the Accepted condition."
        ),
        "required": ["targetRef"],
        "properties": {
            "targetRef": {
                "type": "object",
                "description": "The object the policy applies to (the Gateway API's LocalPolicyTargetReferenceWithSectionName).",
                "required": ["group", "kind", "name"],
                "properties": {
                    "group": {
                        "type": "string",
                        "maxLength": 253,
                        "description": "gateway.networking.k8s.io for an HTTPRoute, \"\" for a Service or a Namespace."
                    },
                    "kind": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 63,
                        "description": "HTTPRoute, Service or (AuthorizationPolicy) Namespace."
                    },
                    "name": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 253,
                        "description": "The target's name."
                    },
                    "sectionName": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 253,
                        "description": "For an HTTPRoute: the name of the one rule the policy applies to; unset, every rule."
                    }
                }
            }
        },
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Defines a policy kind of ours: its `spec` as JSON with [`attachment_spec_schema`] (the
/// derive needs one spec type per kind) and the custom resource, whose attributes every kind
/// shares but its kind, plural and description.
macro_rules! attachment_spec {
    ($(#[$doc:meta])* $spec:ident, $kind:literal, $plural:literal, $description:literal, $targets:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, CustomResource)]
        #[kube(
            group = "mesh.dev",
            version = "v1alpha1",
            kind = $kind,
            plural = $plural,
            namespaced,
            status = "PolicyStatus",
            category = "mesh",
            doc = $description,
            printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.name"),
            printcolumn(name = "Accepted", type_ = "string", json_path = ".status.conditions[?(@.type==\"Accepted\")].status"),
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
        )]
        #[serde(transparent)]
        pub struct $spec(pub serde_json::Value);

        impl JsonSchema for $spec {
            fn schema_name() -> Cow<'static, str> {
                stringify!($spec).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                attachment_spec_schema($targets)
            }
        }
    };
}

attachment_spec!(
    /// A `FaultPolicy`'s spec: `targetRef` (an `HTTPRoute`) and the body of
    /// `mesh_core::policy::attachment::FaultPolicy` (`delay`, `abort`).
    FaultPolicySpec,
    "FaultPolicy",
    "faultpolicies",
    "Client-side faults (delay, abort) injected into the requests of an HTTPRoute or one of its rules.",
    "HTTPRoute"
);

attachment_spec!(
    /// A `RateLimitPolicy`'s spec: `targetRef` (an `HTTPRoute` or a `Service`) and the body of
    /// `mesh_core::policy::attachment::RateLimitPolicy` (`total`, `identity`, `overrides`,
    /// `mode`).
    RateLimitPolicySpec,
    "RateLimitPolicy",
    "ratelimitpolicies",
    "Local rate limits of an HTTPRoute's requests (in each calling sidecar) or of a Service (in each sidecar serving it).",
    "HTTPRoute or Service"
);

attachment_spec!(
    /// A `CachePolicy`'s spec: `targetRef` (an `HTTPRoute`) and the body of
    /// `mesh_core::policy::attachment::CachePolicy`.
    CachePolicySpec,
    "CachePolicy",
    "cachepolicies",
    "The response cache (RFC 9111 shared-cache rules) of an HTTPRoute's requests.",
    "HTTPRoute"
);

attachment_spec!(
    /// A `BackendPolicy`'s spec: `targetRef` (a `Service`) and the body of
    /// `mesh_core::policy::attachment::BackendPolicy`.
    BackendPolicySpec,
    "BackendPolicy",
    "backendpolicies",
    "How a Service's endpoints are chosen and protected: load balancing, outlier detection, breaker and concurrency limits.",
    "Service"
);

attachment_spec!(
    /// An `AuthorizationPolicy`'s spec: `targetRef` (a `Service`, or the policy's `Namespace`)
    /// and the body of `mesh_core::policy::authorization::AuthorizationPolicy` (`action`,
    /// `rules`; or, on a Namespace, `default`).
    AuthorizationPolicySpec,
    "AuthorizationPolicy",
    "authorizationpolicies",
    "Who may call a Service, or every Service of a Namespace (ALLOW, DENY, AUDIT rules on the caller's SPIFFE ID, method, path and port), checked by the sidecars serving it; on a Namespace, `default` sets what its Services do without an ALLOW policy (allow, deny, authenticated, sameCluster).",
    "Service or Namespace"
);

/// The file in `charts/mesh/crds/` of each of our policy CRDs, with the CRD.
pub fn policy_crds() -> Vec<(
    &'static str,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
)> {
    use kube::CustomResourceExt;
    vec![
        ("mesh.dev_faultpolicies.yaml", FaultPolicy::crd()),
        ("mesh.dev_ratelimitpolicies.yaml", RateLimitPolicy::crd()),
        ("mesh.dev_cachepolicies.yaml", CachePolicy::crd()),
        ("mesh.dev_backendpolicies.yaml", BackendPolicy::crd()),
        (
            "mesh.dev_authorizationpolicies.yaml",
            AuthorizationPolicy::crd(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_route_with_fields_unknown_to_the_mesh_still_reads() {
        let route: HttpRoute = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "demo", "generation": 2},
            "spec": {"parentRefs": [{"kind": "Service", "name": "echo"}], "futureField": {"x": 1}},
            "status": {"parents": [{"controllerName": "example.com/other", "anything": true}]}
        }))
        .unwrap();
        assert_eq!(route.metadata.generation, Some(2));
        assert_eq!(route.spec["futureField"]["x"], 1);
        assert!(route.status.is_some());
    }

    #[test]
    fn a_policy_spec_is_kept_as_written() {
        let policy: RateLimitPolicy = serde_json::from_value(json!({
            "apiVersion": "mesh.dev/v1alpha1",
            "kind": "RateLimitPolicy",
            "metadata": {"name": "p", "namespace": "demo"},
            "spec": {"targetRef": {"group": "", "kind": "Service", "name": "echo"},
                     "total": {"requestsPerSecond": 0}, "typo": 1}
        }))
        .unwrap();
        assert_eq!(policy.spec.0["total"]["requestsPerSecond"], 0);
        assert_eq!(policy.spec.0["typo"], 1);
        assert!(policy.status.is_none());
    }

    #[test]
    fn the_crds_check_the_target_and_keep_the_body() {
        let crds = policy_crds();
        assert_eq!(crds.len(), 5);
        for (_, crd) in &crds {
            let version = &crd.spec.versions[0];
            assert!(
                version.subresources.as_ref().unwrap().status.is_some(),
                "{}",
                crd.spec.names.kind
            );
            let schema = serde_json::to_value(version.schema.as_ref().unwrap()).unwrap();
            let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
            assert_eq!(spec["required"], json!(["targetRef"]));
            assert_eq!(spec["x-kubernetes-preserve-unknown-fields"], true);
            assert_eq!(
                spec["properties"]["targetRef"]["required"],
                json!(["group", "kind", "name"])
            );
        }
        assert_eq!(crds[1].1.spec.names.plural, "ratelimitpolicies");
        assert_eq!(
            crds[1].1.metadata.name.as_deref(),
            Some("ratelimitpolicies.mesh.dev")
        );
    }

    /// The chart ships the CRDs generated from these types; this keeps the files true.
    /// `UPDATE_CRDS=1 cargo test -p mesh-k8s` rewrites them after a change.
    #[test]
    fn chart_crds_match_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/mesh/crds");
        for (file, crd) in policy_crds() {
            let path = dir.join(file);
            let generated = format!(
                "# Generated from k8s/src/policy.rs (`UPDATE_CRDS=1 cargo test -p mesh-k8s`); do not edit.\n{}",
                serde_saphyr::to_string(&crd).expect("CRD serialises")
            );
            if std::env::var_os("UPDATE_CRDS").is_some() {
                std::fs::write(&path, &generated).unwrap();
            }
            let shipped = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                shipped == generated,
                "{} differs from the types: run `UPDATE_CRDS=1 cargo test -p mesh-k8s`",
                path.display()
            );
        }
    }
}
