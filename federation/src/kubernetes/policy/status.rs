//! The status the leader writes on each policy object (pure): the conditions `compile` gave
//! it, in the shape of its kind, and only when they differ from what the object has.
//!
//! - `HTTPRoute` and `GRPCRoute`: one `status.parents[]` entry per `kind: Service` parent, with `parentRef`
//!   as written, `controllerName: mesh.dev/controller` and `conditions` (`Accepted`,
//!   `ResolvedRefs`). Entries of other controllers are kept as they are: the list is shared.
//!   `compile` judges a route as a whole, so every parent of a route gets the same conditions.
//! - Our kinds: `status.conditions` (`Accepted`).
//!
//! Conditions follow the API conventions (`k8s/src/conditions.rs`): `observedGeneration` is the
//! generation judged, `lastTransitionTime` moves only when the status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use mesh_core::policy::compile::ObjectStatus;
use mesh_k8s::conditions::{ConditionUpdate, same, set_condition};
use mesh_k8s::policy::CONTROLLER_NAME;
use serde_json::{Value, json};

/// `current` updated to `status`'s conditions for `generation`: each type set, types no
/// longer reported removed.
fn updated(
    current: &[Condition],
    status: &ObjectStatus,
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut conditions = current.to_vec();
    for c in &status.conditions {
        set_condition(
            &mut conditions,
            ConditionUpdate {
                type_: &c.kind,
                status: c.status,
                reason: &c.reason,
                message: c.message.clone(),
            },
            generation,
        );
    }
    conditions.retain(|c| status.conditions.iter().any(|s| s.kind == c.type_));
    conditions
}

/// The conditions to write on one of our policies whose status has `current`, or `None` when
/// they already say the same.
pub(crate) fn policy_conditions(
    current: &[Condition],
    status: &ObjectStatus,
    generation: Option<i64>,
) -> Option<Vec<Condition>> {
    let conditions = updated(current, status, generation);
    (!same(&conditions, current)).then_some(conditions)
}

/// The `status.parents` to write on a route (an `HTTPRoute` or a `GRPCRoute`: same shape) of
/// `spec`, `current` status and `generation`, or `None` when its entries of ours already say
/// the same.
pub(crate) fn route_parents(
    spec: &Value,
    current: Option<&Value>,
    generation: Option<i64>,
    status: &ObjectStatus,
) -> Option<Vec<Value>> {
    let current: &[Value] = current
        .and_then(|s| s["parents"].as_array())
        .map_or(&[], Vec::as_slice);
    let (mine, mut parents): (Vec<&Value>, Vec<&Value>) = current
        .iter()
        .partition(|p| p["controllerName"] == CONTROLLER_NAME);
    let wanted: Vec<&Value> = spec["parentRefs"]
        .as_array()
        .map(|refs| refs.iter().filter(|p| p["kind"] == "Service").collect())
        .unwrap_or_default();
    // An entry of ours for a parent no longer named is stale.
    let mut changed = mine.len() != wanted.len();
    let mut ours = Vec::new();
    for parent_ref in wanted {
        let existing = mine.iter().find(|p| p["parentRef"] == *parent_ref);
        let before: Vec<Condition> = existing
            .and_then(|p| serde_json::from_value(p["conditions"].clone()).ok())
            .unwrap_or_default();
        let conditions = updated(&before, status, generation);
        changed |= existing.is_none() || !same(&before, &conditions);
        ours.push(json!({
            "parentRef": parent_ref,
            "controllerName": CONTROLLER_NAME,
            "conditions": conditions,
        }));
    }
    if !changed {
        return None;
    }
    let mut out: Vec<Value> = parents.drain(..).cloned().collect();
    out.extend(ours);
    Some(out)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use mesh_core::policy::compile::Condition as Judged;
    use mesh_k8s::policy::HttpRoute;

    use super::*;

    fn judged(accepted: bool, reason: &str) -> ObjectStatus {
        ObjectStatus {
            kind: "HTTPRoute".into(),
            namespace: "demo".into(),
            name: "r".into(),
            source: "kubernetes HTTPRoute demo/r".into(),
            conditions: vec![
                Judged {
                    kind: "Accepted".into(),
                    status: accepted,
                    reason: reason.into(),
                    message: "m".into(),
                },
                Judged {
                    kind: "ResolvedRefs".into(),
                    status: true,
                    reason: "ResolvedRefs".into(),
                    message: "every reference resolves".into(),
                },
            ],
        }
    }

    fn route(status: Option<Value>) -> HttpRoute {
        HttpRoute {
            metadata: ObjectMeta {
                name: Some("r".into()),
                namespace: Some("demo".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: json!({"parentRefs": [
                {"group": "", "kind": "Service", "name": "echo"},
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}
            ]}),
            status,
        }
    }

    fn route_parents(r: &HttpRoute, status: &ObjectStatus) -> Option<Vec<Value>> {
        super::route_parents(&r.spec, r.status.as_ref(), r.metadata.generation, status)
    }

    #[test]
    fn route_status_is_written_once_per_change_and_keeps_other_controllers_entries() {
        let other = json!({"parentRef": {"name": "edge"}, "controllerName": "example.com/gw",
                           "conditions": [{"type": "Accepted", "status": "True"}]});
        let mut r = route(Some(json!({"parents": [other.clone()]})));
        let parents = route_parents(&r, &judged(true, "Accepted")).expect("first write");
        assert_eq!(parents.len(), 2, "{parents:?}");
        assert_eq!(parents[0], other);
        let mine = &parents[1];
        assert_eq!(mine["controllerName"], "mesh.dev/controller");
        assert_eq!(mine["parentRef"]["name"], "echo");
        let conditions = mine["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0]["type"], "Accepted");
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[0]["observedGeneration"], 3);
        assert!(conditions[0]["lastTransitionTime"].is_string());

        r.status = Some(json!({ "parents": parents }));
        assert_eq!(route_parents(&r, &judged(true, "Accepted")), None);
        let refused = route_parents(&r, &judged(false, "Conflicted")).expect("a change");
        assert_eq!(refused[1]["conditions"][0]["reason"], "Conflicted");
        assert_eq!(refused[1]["conditions"][0]["status"], "False");
        assert_eq!(refused[0], other);
    }

    #[test]
    fn an_entry_for_a_parent_no_longer_named_is_removed() {
        let stale = json!({"parentRef": {"group": "", "kind": "Service", "name": "gone"},
                           "controllerName": "mesh.dev/controller", "conditions": []});
        let r = route(Some(json!({ "parents": [stale] })));
        let parents = route_parents(&r, &judged(true, "Accepted")).unwrap();
        assert_eq!(parents.len(), 1);
        assert_eq!(parents[0]["parentRef"]["name"], "echo");
    }

    #[test]
    fn policy_conditions_change_only_with_what_they_say() {
        let mut status = judged(false, "Invalid");
        status.conditions.truncate(1);
        let first = policy_conditions(&[], &status, Some(1)).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].reason, "Invalid");
        assert_eq!(policy_conditions(&first, &status, Some(1)), None);
        assert!(policy_conditions(&first, &status, Some(2)).is_some());
    }
}
