//! `mesh check` against Kubernetes clusters: each check names what it looked at, whether it
//! holds, and when it does not, what to do. Checks of one cluster need only its kubeconfig;
//! given several, links and trust bundles are also checked from both sides.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use mesh_core::api::LinkInfo;
use serde::Serialize;

use crate::client::ClusterSource;
use crate::conditions::condition;
use crate::link::{Link, READY};
use crate::link_info::read_link_info;
use crate::names::{
    CA_CERT_KEY, CONTROLLER_SERVICE_ACCOUNT, LEADER_LEASE, LINK_INFO_CONFIGMAP, ROOT_CA_CONFIGMAP,
};

/// The CRDs the chart installs.
pub const CRDS: [&str; 10] = [
    "links.mesh.dev",
    "serviceexports.multicluster.x-k8s.io",
    "serviceimports.multicluster.x-k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "grpcroutes.gateway.networking.k8s.io",
    "faultpolicies.mesh.dev",
    "ratelimitpolicies.mesh.dev",
    "cachepolicies.mesh.dev",
    "backendpolicies.mesh.dev",
    "authorizationpolicies.mesh.dev",
];

/// A root certificate closer to expiry than this is reported.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The cluster (its name when known, else its kubeconfig or context).
    pub cluster: String,
    /// What was checked.
    pub check: String,
    /// Whether it holds.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
    /// What to do, when it does not hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The findings of one run.
#[derive(Debug, Default)]
struct Report {
    findings: Vec<Finding>,
}

impl Report {
    fn pass(&mut self, cluster: &str, check: &str, detail: String) {
        self.findings.push(Finding {
            cluster: cluster.to_string(),
            check: check.to_string(),
            ok: true,
            detail,
            fix: None,
        });
    }

    fn fail(&mut self, cluster: &str, check: &str, detail: String, fix: String) {
        self.findings.push(Finding {
            cluster: cluster.to_string(),
            check: check.to_string(),
            ok: false,
            detail,
            fix: Some(fix),
        });
    }
}

/// One cluster as the checks saw it.
struct Checked {
    name: String,
    info: Option<LinkInfo>,
    links: Vec<Link>,
}

/// Runs every check against each of `sources` (the chart installed in `namespace`).
pub async fn check_clusters(sources: &[ClusterSource], namespace: &str) -> Vec<Finding> {
    let mut report = Report::default();
    let mut checked = Vec::new();
    for source in sources {
        if let Some(c) = check_cluster(&mut report, source, namespace).await {
            checked.push(c);
        }
    }
    cross_check(&mut report, &checked);
    report.findings
}

async fn check_cluster(
    report: &mut Report,
    source: &ClusterSource,
    namespace: &str,
) -> Option<Checked> {
    let label = source.to_string();
    let client = match source.client().await {
        Ok(c) => c,
        Err(e) => {
            report.fail(
                &label,
                "api-server",
                e.reason,
                "fix the kubeconfig or pass another".into(),
            );
            return None;
        }
    };
    match client.apiserver_version().await {
        Ok(v) => report.pass(
            &label,
            "api-server",
            format!("reachable, Kubernetes {}", v.git_version),
        ),
        Err(e) => {
            report.fail(
                &label,
                "api-server",
                e.to_string(),
                "check the kubeconfig's server address and credentials".into(),
            );
            return None;
        }
    }
    let info = match read_link_info(&client, namespace).await {
        Ok(info) => Some(info),
        Err(e) => {
            report.fail(
                &label,
                "link-info",
                e.to_string(),
                "install the chart, and check that the controller and gateway run (`kubectl -n \
                 <namespace> get pods`); the controller publishes the link information once its \
                 gateway has reported"
                    .into(),
            );
            None
        }
    };
    let name = info.as_ref().map_or(label.clone(), |i| i.cluster.clone());
    if let Some(info) = &info {
        report.pass(
            &name,
            "gateway",
            format!(
                "advertised at {} (published by the controller)",
                info.gateway_addr
            ),
        );
    }
    check_crds(report, &client, &name).await;
    check_leader(report, &client, &name, namespace).await;
    check_root_expiry(report, &client, &name, namespace).await;
    check_own_access(report, &client, &name, namespace).await;
    check_controller_access(report, &client, &name, namespace).await;
    let links = match Api::<Link>::all(client.clone())
        .list(&Default::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            report.fail(
                &name,
                "links",
                e.to_string(),
                "install the chart's CRDs".into(),
            );
            Vec::new()
        }
    };
    for link in &links {
        let peer = link.name_any();
        let conditions = link
            .status
            .clone()
            .map(|s| s.conditions)
            .unwrap_or_default();
        match condition(&conditions, READY) {
            Some(c) if c.status == "True" => report.pass(
                &name,
                &format!("link {peer}"),
                format!(
                    "Ready ({}), RTT {}",
                    c.message,
                    link.status
                        .as_ref()
                        .and_then(|s| s.rtt.clone())
                        .unwrap_or_else(|| "?".into())
                ),
            ),
            Some(c) => report.fail(
                &name,
                &format!("link {peer}"),
                format!("not Ready: {}: {}", c.reason, c.message),
                format!(
                    "make sure cluster {peer} has a Link to {name} and its gateway is reachable; \
                     `mesh link` both clusters again"
                ),
            ),
            None => report.fail(
                &name,
                &format!("link {peer}"),
                "no status: the controller has not reported on it".into(),
                "check that this cluster's controller runs and leads".into(),
            ),
        }
    }
    if links.is_empty() {
        report.pass(&name, "links", "none yet (link with `mesh link`)".into());
    }
    Some(Checked { name, info, links })
}

async fn check_crds(report: &mut Report, client: &Client, name: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in CRDS {
        match api.get_opt(crd).await {
            Ok(Some(def)) => {
                let established = def
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                if established {
                    report.pass(
                        name,
                        &format!("crd {crd}"),
                        "installed and established".into(),
                    );
                } else {
                    report.fail(
                        name,
                        &format!("crd {crd}"),
                        "installed but not established".into(),
                        "check `kubectl describe crd` for why the API server does not serve it"
                            .into(),
                    );
                }
            }
            Ok(None) => report.fail(
                name,
                &format!("crd {crd}"),
                "not installed".into(),
                "install the chart (`helm install mesh charts/mesh ...`), which installs its CRDs"
                    .into(),
            ),
            Err(e) => report.fail(
                name,
                &format!("crd {crd}"),
                e.to_string(),
                "run mesh check as a user who may read CustomResourceDefinitions".into(),
            ),
        }
    }
}

async fn check_leader(report: &mut Report, client: &Client, name: &str, namespace: &str) {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let fix = "check the controller Deployment (`kubectl -n <namespace> get deploy mesh-controller`) and its logs";
    match api.get_opt(LEADER_LEASE).await {
        Ok(Some(lease)) => {
            let spec = lease.spec.unwrap_or_default();
            let holder = spec.holder_identity.filter(|h| !h.is_empty());
            let duration = spec.lease_duration_seconds.unwrap_or(15);
            let age = spec
                .renew_time
                .map(|t| Timestamp::now().as_second() - t.0.as_second());
            match (holder, age) {
                (Some(holder), Some(age)) if age <= i64::from(duration) + 5 => report.pass(
                    name,
                    "controller",
                    format!("running; leader {holder} renewed {age}s ago"),
                ),
                (holder, age) => report.fail(
                    name,
                    "controller",
                    format!(
                        "no live leader (holder {}, last renewal {})",
                        holder.unwrap_or_else(|| "none".into()),
                        age.map_or("never".into(), |a| format!("{a}s ago"))
                    ),
                    fix.into(),
                ),
            }
        }
        Ok(None) => report.fail(
            name,
            "controller",
            "never elected a leader".into(),
            fix.into(),
        ),
        Err(e) => report.fail(name, "controller", e.to_string(), fix.into()),
    }
}

async fn check_root_expiry(report: &mut Report, client: &Client, name: &str, namespace: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let pem = match api.get_opt(ROOT_CA_CONFIGMAP).await {
        Ok(Some(map)) => map.data.and_then(|d| d.get(CA_CERT_KEY).cloned()),
        Ok(None) => None,
        Err(e) => {
            report.fail(
                name,
                "certificates",
                e.to_string(),
                "run mesh check as a cluster admin".into(),
            );
            return;
        }
    };
    let Some(pem) = pem else {
        report.fail(
            name,
            "certificates",
            format!("no ConfigMap {ROOT_CA_CONFIGMAP}: the controller has not published its root"),
            "check that the controller runs".into(),
        );
        return;
    };
    match mesh_core::identity::certificate_expiry(&pem) {
        Ok(left) if left > EXPIRY_WARNING => report.pass(
            name,
            "certificates",
            format!("root valid for {} more days", left.as_secs() / 86_400),
        ),
        Ok(left) => report.fail(
            name,
            "certificates",
            format!("the root expires in {} days", left.as_secs() / 86_400),
            "rotate the cluster's root CA before it expires".into(),
        ),
        Err(e) => report.fail(
            name,
            "certificates",
            e,
            "replace the CA Secret's ca.crt".into(),
        ),
    }
}

/// A permission to check: a verb on a resource (`resource/subresource`) of an API group,
/// cluster-wide or in the chart's namespace, on any object or one named object.
#[derive(Debug, Clone, Copy)]
struct Need {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    in_namespace: bool,
    name: Option<&'static str>,
}

const fn cluster_wide(verb: &'static str, group: &'static str, resource: &'static str) -> Need {
    Need {
        verb,
        group,
        resource,
        in_namespace: false,
        name: None,
    }
}

const fn in_namespace(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    name: Option<&'static str>,
) -> Need {
    Need {
        verb,
        group,
        resource,
        in_namespace: true,
        name,
    }
}

/// What `mesh check` and `mesh link` need of the user running them.
const OPERATOR_NEEDS: [Need; 5] = [
    in_namespace("get", "", "configmaps", Some(LINK_INFO_CONFIGMAP)),
    cluster_wide("list", "mesh.dev", "links"),
    cluster_wide("create", "mesh.dev", "links"),
    cluster_wide("delete", "mesh.dev", "links"),
    in_namespace("get", "coordination.k8s.io", "leases", Some(LEADER_LEASE)),
];

/// What the controller's ServiceAccount needs (the chart's RBAC).
const CONTROLLER_NEEDS: [Need; 13] = [
    cluster_wide("watch", "", "services"),
    cluster_wide("watch", "", "pods"),
    cluster_wide("watch", "discovery.k8s.io", "endpointslices"),
    cluster_wide("watch", "multicluster.x-k8s.io", "serviceexports"),
    cluster_wide("patch", "multicluster.x-k8s.io", "serviceexports/status"),
    cluster_wide("patch", "multicluster.x-k8s.io", "serviceimports"),
    cluster_wide("delete", "multicluster.x-k8s.io", "serviceimports"),
    cluster_wide("watch", "mesh.dev", "links"),
    cluster_wide("patch", "mesh.dev", "links/status"),
    cluster_wide("create", "authentication.k8s.io", "tokenreviews"),
    in_namespace(
        "update",
        "coordination.k8s.io",
        "leases",
        Some(LEADER_LEASE),
    ),
    in_namespace("patch", "", "configmaps", Some(LINK_INFO_CONFIGMAP)),
    in_namespace("get", "", "secrets", None),
];

impl Need {
    fn attributes(&self, namespace: &str) -> ResourceAttributes {
        let (resource, subresource) = match self.resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (self.resource, None),
        };
        ResourceAttributes {
            verb: Some(self.verb.into()),
            group: Some(self.group.into()),
            resource: Some(resource.into()),
            subresource,
            namespace: self.in_namespace.then(|| namespace.to_string()),
            name: self.name.map(str::to_string),
            ..ResourceAttributes::default()
        }
    }
}

/// The needs `allowed` denies, as `verb resource`; an error when the API server cannot say.
async fn missing(
    needs: &[Need],
    namespace: &str,
    mut allowed: impl AsyncFnMut(ResourceAttributes) -> Result<bool, kube::Error>,
) -> Result<Vec<String>, kube::Error> {
    let mut missing = Vec::new();
    for need in needs {
        if !allowed(need.attributes(namespace)).await? {
            missing.push(format!("{} {}", need.verb, need.resource));
        }
    }
    Ok(missing)
}

async fn check_own_access(report: &mut Report, client: &Client, name: &str, namespace: &str) {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let denied = missing(&OPERATOR_NEEDS, namespace, async |attributes| {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(attributes),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = api.create(&PostParams::default(), &review).await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    })
    .await;
    let check = "rbac (you)";
    match denied {
        Ok(denied) if denied.is_empty() => report.pass(
            name,
            check,
            "may read the mesh's objects and manage Links".into(),
        ),
        Ok(denied) => report.fail(
            name,
            check,
            format!("not allowed: {}", denied.join(", ")),
            "run mesh link and mesh check as a user bound to a role granting these".into(),
        ),
        Err(e) => report.fail(
            name,
            check,
            format!("cannot ask the API server: {e}"),
            "check the kubeconfig's credentials".into(),
        ),
    }
}

async fn check_controller_access(
    report: &mut Report,
    client: &Client,
    name: &str,
    namespace: &str,
) {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let user = format!("system:serviceaccount:{namespace}:{CONTROLLER_SERVICE_ACCOUNT}");
    let groups = vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{namespace}"),
    ];
    let denied = missing(&CONTROLLER_NEEDS, namespace, async |attributes| {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.clone()),
                groups: Some(groups.clone()),
                resource_attributes: Some(attributes),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = api.create(&PostParams::default(), &review).await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    })
    .await;
    let check = "rbac (controller)";
    match denied {
        Ok(denied) if denied.is_empty() => {
            report.pass(name, check, format!("{user} has every permission it needs"))
        }
        Ok(denied) => report.fail(
            name,
            check,
            format!("{user} may not: {}", denied.join(", ")),
            "reinstall the chart (its ClusterRole and Role grant these) or restore the edited RBAC"
                .into(),
        ),
        Err(e) => report.fail(
            name,
            check,
            format!("cannot ask the API server: {e}"),
            "run mesh check as a user who may create SubjectAccessReviews".into(),
        ),
    }
}

/// Links and trust bundles seen from both sides, for every pair of checked clusters.
fn cross_check(report: &mut Report, clusters: &[Checked]) {
    for a in clusters {
        for b in clusters {
            if a.name == b.name {
                continue;
            }
            let a_to_b = a.links.iter().find(|l| l.name_any() == b.name);
            let b_to_a = b.links.iter().find(|l| l.name_any() == a.name);
            match (a_to_b, b_to_a) {
                (Some(_), None) => report.fail(
                    &a.name,
                    &format!("link {}", b.name),
                    format!(
                        "{} has a Link to {}, but {} has none back",
                        a.name, b.name, b.name
                    ),
                    format!(
                        "run `mesh link` for {} and {} again (or `mesh unlink` to remove the rest)",
                        a.name, b.name
                    ),
                ),
                (Some(link), Some(_)) => {
                    let Some(info) = &b.info else { continue };
                    if link.spec.trust_bundle.ca_pem == info.trust_bundle.ca_pem
                        && link.spec.gateway_address == info.gateway_addr.to_string()
                    {
                        report.pass(
                            &a.name,
                            &format!("trust {}", b.name),
                            "the Link holds the peer's current trust bundle and gateway address"
                                .into(),
                        );
                    } else {
                        report.fail(
                            &a.name,
                            &format!("trust {}", b.name),
                            "the Link's trust bundle or gateway address differs from what the peer publishes"
                                .into(),
                            format!("run `mesh link` for {} and {} again to refresh it", a.name, b.name),
                        );
                    }
                }
                _ => {}
            }
        }
    }
}
