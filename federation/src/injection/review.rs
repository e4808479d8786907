//! One admission request in, one answer out: decodes the `AdmissionReview`, asks
//! [`mutation::decide`](super::mutation::decide), and encodes the `AdmissionReview` response.
//! Pure (bytes in, bytes out), so every path is unit-tested without sockets.
//!
//! The webhook never blocks a pod because of its own trouble: when it cannot build an answer
//! (settings missing or invalid, a pod it cannot read) the pod is allowed unchanged with a
//! warning, counted as `error`. A body that is not an `AdmissionReview` at all gets a 400 with
//! the reason (there is no request uid to answer); never a 500.

use http::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use super::containers::Template;
use super::mutation::{Decision, decide};
use super::settings::{InjectionSettings, SettingsError};

/// How a request ended, the `result` label of `mesh_injection_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The pod got the sidecar.
    Injected,
    /// Allowed unchanged: not a pod creation, opted out, already injected, ...
    Skipped,
    /// Refused: an annotation or field the webhook cannot honour.
    Refused,
    /// The webhook could not do its work (bad body, missing settings): allowed unchanged.
    Error,
}

impl Outcome {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Skipped => "skipped",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }
}

/// The HTTP answer to one webhook call.
#[derive(Debug)]
pub(crate) struct Answer {
    /// 200 with an `AdmissionReview`, or 400 with a text reason.
    pub status: StatusCode,
    /// The body.
    pub body: Vec<u8>,
    /// What happened.
    pub outcome: Outcome,
    /// One line for the log: the pod and the reason.
    pub summary: String,
}

/// What every answer needs besides the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The cluster's name.
    pub cluster: &'a str,
    /// The controller's namespace.
    pub mesh_namespace: &'a str,
    /// The cluster's root certificate (PEM).
    pub root_pem: &'a str,
}

/// Answers the webhook call carrying `body`, with the settings as they were read.
pub(crate) fn answer(
    body: &[u8],
    settings: Result<&InjectionSettings, &SettingsError>,
    cx: Context<'_>,
) -> Answer {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!(
                "the body is not a JSON AdmissionReview (admission.k8s.io/v1): {e}"
            ));
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return bad_request("the AdmissionReview carries no request".into()),
    };
    let response = AdmissionResponse::from(&request);
    let namespace = request
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let pod_name = match request.name.as_str() {
        "" => request
            .object
            .as_ref()
            .and_then(|o| o.metadata.generate_name.clone())
            .map(|g| format!("{g}*"))
            .unwrap_or_else(|| "<unnamed>".into()),
        name => name.to_string(),
    };
    let who = format!("pod {namespace}/{pod_name}");
    if request.kind.kind != "Pod"
        || request.operation != Operation::Create
        || request.sub_resource.is_some()
    {
        let what = format!(
            "{:?} of {}{} (only pod creations are injected)",
            request.operation,
            request.kind.kind,
            request
                .sub_resource
                .map(|s| format!("/{s}"))
                .unwrap_or_default()
        );
        return review_answer(response, Outcome::Skipped, format!("{who}: {what}"));
    }
    let unchanged_with = |reason: String| {
        let warning = format!("mesh sidecar not injected: {reason}");
        let mut response = response.clone();
        response.warnings = Some(vec![warning]);
        review_answer(response, Outcome::Error, format!("{who}: {reason}"))
    };
    let pod: Pod = match request
        .object
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| e.to_string())
        .and_then(|v| {
            v.ok_or_else(|| "the request carries no object".to_string())
                .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
        }) {
        Ok(pod) => pod,
        Err(e) => return unchanged_with(format!("the pod cannot be read: {e}")),
    };
    let settings = match settings {
        Ok(s) => s,
        Err(e) => return unchanged_with(e.to_string()),
    };
    let template = Template {
        cluster: cx.cluster,
        mesh_namespace: cx.mesh_namespace,
        root_pem: cx.root_pem,
        settings,
    };
    match decide(&pod, &namespace, &template) {
        Decision::Inject { patch, warnings } => {
            let patch: json_patch::Patch = match serde_json::from_value(patch.into()) {
                Ok(p) => p,
                Err(e) => return unchanged_with(format!("the patch is malformed: {e}")),
            };
            let mut response = match response.clone().with_patch(patch) {
                Ok(r) => r,
                Err(e) => return unchanged_with(format!("the patch cannot be encoded: {e}")),
            };
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            review_answer(response, Outcome::Injected, format!("{who}: injected"))
        }
        Decision::Skip { reason, warning } => {
            let mut response = response;
            response.warnings = warning.map(|w| vec![w]);
            review_answer(response, Outcome::Skipped, format!("{who}: {reason}"))
        }
        Decision::Refuse(message) => {
            let summary = format!("{who}: refused: {message}");
            review_answer(response.deny(message), Outcome::Refused, summary)
        }
    }
}

fn bad_request(reason: String) -> Answer {
    Answer {
        status: StatusCode::BAD_REQUEST,
        body: reason.clone().into_bytes(),
        outcome: Outcome::Error,
        summary: reason,
    }
}

fn review_answer(response: AdmissionResponse, outcome: Outcome, summary: String) -> Answer {
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => Answer {
            status: StatusCode::OK,
            body,
            outcome,
            summary,
        },
        // Not reachable with these types; still no 500 and no panic.
        Err(e) => bad_request(format!("the answer cannot be encoded: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const CX: Context<'static> = Context {
        cluster: "us-east",
        mesh_namespace: "mesh-system",
        root_pem: "root",
    };

    fn review(object: Value, operation: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "echo-0",
                "namespace": "demo",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn pod(annotations: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "echo-0", "namespace": "demo", "annotations": annotations},
            "spec": {"containers": [{"name": "echo", "image": "echo"}]}
        })
    }

    fn settings() -> InjectionSettings {
        InjectionSettings::parse("image: mesh:0.1.0\n").unwrap()
    }

    fn response(a: &Answer) -> Value {
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        v["response"].clone()
    }

    #[test]
    fn a_pod_creation_is_answered_with_a_json_patch() {
        let s = settings();
        let a = answer(&review(pod(json!({})), "CREATE"), Ok(&s), CX);
        assert_eq!(a.outcome, Outcome::Injected);
        let r = response(&a);
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        // kube encodes the patch as an array of bytes, which the API server's JSON decoder
        // takes for a `[]byte` as well as base64.
        let patch: Vec<u8> = serde_json::from_value(r["patch"].clone()).unwrap();
        let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
        assert!(
            ops.iter().any(|o| o["path"] == "/spec/initContainers"),
            "{ops:?}"
        );
    }

    #[test]
    fn updates_and_other_kinds_pass_unchanged() {
        let s = settings();
        let a = answer(&review(pod(json!({})), "UPDATE"), Ok(&s), CX);
        assert_eq!(a.outcome, Outcome::Skipped);
        let r = response(&a);
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none());
    }

    #[test]
    fn a_bad_annotation_is_denied_with_its_name() {
        let s = settings();
        let a = answer(
            &review(pod(json!({"mesh.dev/inject": "maybe"})), "CREATE"),
            Ok(&s),
            CX,
        );
        assert_eq!(a.outcome, Outcome::Refused);
        let r = response(&a);
        assert_eq!(r["allowed"], false);
        assert!(
            r["status"]["message"]
                .as_str()
                .unwrap()
                .contains("mesh.dev/inject"),
            "{r}"
        );
    }

    #[test]
    fn without_usable_settings_the_pod_is_allowed_unchanged_with_a_warning() {
        let err = SettingsError::for_test("image is empty");
        let a = answer(&review(pod(json!({})), "CREATE"), Err(&err), CX);
        assert_eq!(a.outcome, Outcome::Error);
        let r = response(&a);
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none());
        assert!(
            r["warnings"][0]
                .as_str()
                .unwrap()
                .contains("image is empty"),
            "{r}"
        );
    }

    #[test]
    fn an_unreadable_pod_is_allowed_unchanged_with_a_warning() {
        let s = settings();
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                         "spec": {"containers": "not a list"}});
        let a = answer(&review(bad, "CREATE"), Ok(&s), CX);
        assert_eq!(a.outcome, Outcome::Error);
        let r = response(&a);
        assert_eq!(r["allowed"], true);
        assert!(
            r["warnings"][0]
                .as_str()
                .unwrap()
                .contains("cannot be read"),
            "{r}"
        );
    }

    #[test]
    fn garbage_gets_a_400_naming_the_problem() {
        let s = settings();
        for body in [
            &b"not json"[..],
            b"{}",
            b"{\"kind\":\"AdmissionReview\"}",
            b"",
        ] {
            let a = answer(body, Ok(&s), CX);
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body:?}");
            assert_eq!(a.outcome, Outcome::Error);
            let text = String::from_utf8(a.body).unwrap();
            assert!(text.contains("AdmissionReview"), "{text}");
        }
    }
}
