//! `Link` objects as the record of this cluster's links: every replica applies them to its
//! state (trust, peering), and the leader reports on each in its status. Pure functions over
//! the state and the objects; the watch and the writes are elsewhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use mesh_core::api::LinkStatusView;
use mesh_k8s::conditions::{ConditionUpdate, set_condition};
use mesh_k8s::link::{Link, LinkStatus, READY};

use crate::state::FederationState;

/// Whether each `Link` (by name) was accepted, or why not.
pub(crate) type Acceptance = BTreeMap<String, Result<(), String>>;

/// Makes the state's links those of `links`: adds or updates each valid one, removes links
/// (and their trust) whose object is gone or no longer valid.
pub(crate) fn apply_links(state: &mut FederationState, links: &[Arc<Link>]) -> Acceptance {
    let mut acceptance = Acceptance::new();
    for link in links {
        let name = link.name_any();
        let result = link
            .spec
            .to_info(&name)
            .map_err(|e| e.reason)
            .and_then(|info| {
                let (cluster, gateway) = (info.cluster.clone(), info.gateway_addr);
                let change = state.add_link(info).map_err(|e| e.to_string())?;
                if change != crate::links::LinkChange::Unchanged {
                    tracing::info!(peer = %cluster, %gateway, ?change, "linked (Link object)");
                }
                Ok(())
            });
        if let Err(reason) = &result {
            tracing::warn!(link = %name, %reason, "Link refused");
        }
        acceptance.insert(name, result);
    }
    for linked in state.links() {
        if !matches!(acceptance.get(&linked.cluster), Some(Ok(())))
            && state.remove_link(&linked.cluster).is_ok()
        {
            tracing::info!(peer = %linked.cluster, "unlinked: its Link is gone; trust and catalog dropped");
        }
    }
    acceptance
}

/// The status the leader reports for `link`, given its acceptance and what the gateway sees.
pub(crate) fn link_status(
    link: &Link,
    accepted: Option<&Result<(), String>>,
    seen: Option<&LinkStatusView>,
) -> LinkStatus {
    let previous = link.status.clone().unwrap_or_default();
    let mut status = LinkStatus {
        conditions: previous.conditions.clone(),
        rtt: None,
        last_error: previous.last_error.clone(),
        observed_generation: link.metadata.generation,
    };
    let ready = |reason, message: String| ConditionUpdate {
        type_: READY,
        status: true,
        reason,
        message,
    };
    let not_ready = |reason, message: String| ConditionUpdate {
        type_: READY,
        status: false,
        reason,
        message,
    };
    let update = match (accepted, seen) {
        (Some(Err(reason)), _) => {
            status.last_error = Some(reason.clone());
            not_ready(
                "Invalid",
                format!(
                    "{reason}; fix the Link (or run `mesh link` again), no traffic is accepted from this peer"
                ),
            )
        }
        (None, _) => not_ready("Pending", "not processed yet".into()),
        (Some(Ok(())), Some(view)) if view.state == "up" => {
            status.rtt = view.rtt_seconds.map(|s| format!("{:.1}ms", s * 1000.0));
            status.last_error = None;
            ready(
                "Connected",
                format!("the gateway's QUIC link to {} is up", view.cluster),
            )
        }
        (Some(Ok(())), view) => {
            let gateway = &link.spec.gateway_address;
            let error = view.and_then(|v| v.last_error.clone());
            if let Some(e) = &error {
                status.last_error = Some(e.clone());
            }
            let state = view.map_or("down", |v| v.state.as_str());
            not_ready(
                "Disconnected",
                match error {
                    Some(e) => format!(
                        "link {state}: {e}; check that the peer's gateway at {gateway} is reachable \
                         and that the peer has a Link to this cluster (`mesh link`)"
                    ),
                    None => format!(
                        "link {state}: no QUIC link to the peer's gateway at {gateway} yet; check \
                         that it is reachable and that the peer has a Link to this cluster"
                    ),
                },
            )
        }
    };
    set_condition(&mut status.conditions, update, link.metadata.generation);
    status
}

#[cfg(test)]
mod tests {
    use mesh_k8s::conditions::is_true;
    use mesh_k8s::link::{LinkSpec, LinkTrustBundle};

    use super::*;

    fn link() -> Link {
        let mut l = Link::new(
            "eu",
            LinkSpec {
                cluster: "eu".into(),
                region: "eu".into(),
                gateway_address: "192.0.2.1:15443".into(),
                trust_bundle: LinkTrustBundle {
                    trust_domain: "eu.mesh".into(),
                    ca_pem: String::new(),
                },
            },
        );
        l.metadata.generation = Some(3);
        l
    }

    fn view(state: &str, error: Option<&str>) -> LinkStatusView {
        LinkStatusView {
            cluster: "eu".into(),
            region: "eu".into(),
            state: state.into(),
            rtt_seconds: Some(0.0042),
            loss: 0.0,
            catalog_version: Some(1),
            last_error: error.map(str::to_string),
        }
    }

    #[test]
    fn an_up_link_is_ready_with_its_rtt() {
        let status = link_status(&link(), Some(&Ok(())), Some(&view("up", None)));
        assert!(is_true(&status.conditions, READY));
        assert_eq!(status.rtt.as_deref(), Some("4.2ms"));
        assert_eq!(status.observed_generation, Some(3));
    }

    #[test]
    fn a_refused_or_down_link_says_why_and_what_to_do() {
        let status = link_status(
            &link(),
            Some(&Err("trust bundle: no certificate".into())),
            None,
        );
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Invalid")
        );
        assert!(ready.message.contains("trust bundle"), "{}", ready.message);
        let status = link_status(
            &link(),
            Some(&Ok(())),
            Some(&view(
                "down",
                Some("peer presented a certificate from trust domain x.mesh"),
            )),
        );
        let ready = &status.conditions[0];
        assert_eq!(ready.reason, "Disconnected");
        assert!(
            ready.message.contains("trust domain x.mesh"),
            "{}",
            ready.message
        );
        assert!(status.last_error.is_some());
    }
}
