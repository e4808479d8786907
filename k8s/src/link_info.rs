//! The cluster's link information (name, region, trust bundle, gateway address) as its leader
//! controller publishes it in the ConfigMap [`LINK_INFO_CONFIGMAP`], where `mesh link` reads it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use mesh_core::api::LinkInfo;

use crate::names::{
    CONTROLLER_MANAGER, LINK_INFO_CONFIGMAP, LINK_INFO_KEY, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};

/// The link information could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LinkInfoError {
    /// The ConfigMap is not there: the chart is not installed, or its controller has not
    /// published yet (it needs its gateway's report first).
    #[error(
        "no ConfigMap {namespace}/{LINK_INFO_CONFIGMAP}: is the mesh chart installed in namespace {namespace} \
         (`helm install mesh charts/mesh -n {namespace} ...`), and are its controller and gateway running and ready?"
    )]
    Missing {
        /// The namespace looked in.
        namespace: String,
    },
    /// The API server could not be asked.
    #[error("reading ConfigMap {namespace}/{LINK_INFO_CONFIGMAP}: {source}")]
    Api {
        /// The namespace.
        namespace: String,
        /// The error.
        source: kube::Error,
    },
    /// The ConfigMap holds something else.
    #[error("ConfigMap {namespace}/{LINK_INFO_CONFIGMAP} key {LINK_INFO_KEY}: {reason}")]
    Malformed {
        /// The namespace.
        namespace: String,
        /// Why.
        reason: String,
    },
}

/// Reads the link information published in `namespace`.
pub async fn read_link_info(client: &Client, namespace: &str) -> Result<LinkInfo, LinkInfoError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = api
        .get_opt(LINK_INFO_CONFIGMAP)
        .await
        .map_err(|source| LinkInfoError::Api {
            namespace: namespace.to_string(),
            source,
        })?
        .ok_or_else(|| LinkInfoError::Missing {
            namespace: namespace.to_string(),
        })?;
    let malformed = |reason: String| LinkInfoError::Malformed {
        namespace: namespace.to_string(),
        reason,
    };
    let json = map
        .data
        .as_ref()
        .and_then(|d| d.get(LINK_INFO_KEY))
        .ok_or_else(|| malformed("missing".into()))?;
    serde_json::from_str(json).map_err(|e| malformed(e.to_string()))
}

/// Publishes `info` in `namespace` (server-side apply by the controller).
pub async fn publish_link_info(
    client: &Client,
    namespace: &str,
    info: &LinkInfo,
) -> Result<(), kube::Error> {
    let json = serde_json::to_string_pretty(info).expect("link info serialises");
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(LINK_INFO_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(LINK_INFO_KEY.to_string(), json)])),
        ..ConfigMap::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    api.patch(
        LINK_INFO_CONFIGMAP,
        &PatchParams::apply(CONTROLLER_MANAGER).force(),
        &Patch::Apply(&map),
    )
    .await?;
    Ok(())
}
