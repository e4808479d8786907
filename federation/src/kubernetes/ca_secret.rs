//! The cluster CA in a Kubernetes Secret: read from the Secret the chart names, or created by
//! the first controller replica that finds none (a create races safely: the loser reads the
//! winner's). Its root is published in the ConfigMap that gateways and sidecars mount.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use mesh_core::identity::{ClusterCa, default_trust_domain};
use mesh_k8s::names::{
    CA_CERT_KEY, CA_KEY_KEY, CONTROLLER_MANAGER, JOIN_TOKEN_KEY, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE, ROOT_CA_CONFIGMAP,
};
use rand::RngCore;

use crate::error::FederationError;

/// The CA material read from (or written to) the Secret.
#[derive(Debug)]
pub(crate) struct CaMaterial {
    /// The CA.
    pub ca: ClusterCa,
    /// The join token for workloads outside Kubernetes.
    pub join_token: String,
}

/// Reads the CA from Secret `namespace/name`; when it does not exist and `create` allows it,
/// generates one and stores it there.
pub(crate) async fn load_or_create(
    client: &Client,
    namespace: &str,
    name: &str,
    cluster: &str,
    create: bool,
) -> Result<CaMaterial, FederationError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let fail = |reason: String| FederationError::Kubernetes {
        what: format!("CA Secret {namespace}/{name}"),
        reason,
    };
    let trust_domain = default_trust_domain(cluster);
    for _ in 0..2 {
        if let Some(secret) = api.get_opt(name).await.map_err(|e| fail(e.to_string()))? {
            return parse(&secret, namespace, name, &trust_domain);
        }
        if !create {
            return Err(fail(
                "does not exist; create it with keys ca.crt and ca.key (and join-token), or \
                 leave the chart's ca.existingSecret empty so the controller creates one"
                    .into(),
            ));
        }
        let ca = ClusterCa::generate(&trust_domain).map_err(|e| fail(e.to_string()))?;
        let mut token = [0u8; 32];
        rand::rng().fill_bytes(&mut token);
        let join_token = hex(&token);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                labels: Some(managed_labels()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                (
                    CA_CERT_KEY.to_string(),
                    ByteString(ca.cert_pem().as_bytes().to_vec()),
                ),
                (
                    CA_KEY_KEY.to_string(),
                    ByteString(ca.key_pem().into_bytes()),
                ),
                (
                    JOIN_TOKEN_KEY.to_string(),
                    ByteString(join_token.clone().into_bytes()),
                ),
            ])),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %format!("{namespace}/{name}"), %trust_domain, "created the cluster CA");
                return Ok(CaMaterial { ca, join_token });
            }
            // Another replica created it first: read theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    Err(fail(
        "was created and deleted while being read; retry".into(),
    ))
}

fn parse(
    secret: &Secret,
    namespace: &str,
    name: &str,
    trust_domain: &str,
) -> Result<CaMaterial, FederationError> {
    let fail = |reason: String| FederationError::Kubernetes {
        what: format!("CA Secret {namespace}/{name}"),
        reason,
    };
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| -> Result<Option<String>, FederationError> {
        data.get(key)
            .map(|b| {
                String::from_utf8(b.0.clone())
                    .map_err(|_| fail(format!("key {key} is not UTF-8 PEM")))
            })
            .transpose()
    };
    let cert = text(CA_CERT_KEY)?.ok_or_else(|| fail(format!("has no key {CA_CERT_KEY}")))?;
    let key = text(CA_KEY_KEY)?.ok_or_else(|| fail(format!("has no key {CA_KEY_KEY}")))?;
    let source = |key: &str| format!("Secret {namespace}/{name} key {key}");
    let ca = ClusterCa::from_pem(
        &cert,
        &key,
        trust_domain,
        (&source(CA_CERT_KEY), &source(CA_KEY_KEY)),
    )
    .map_err(|e| fail(e.to_string()))?;
    // Without a join token only ServiceAccount tokens are accepted: a random one nobody knows.
    let join_token = text(JOIN_TOKEN_KEY)?
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            let mut token = [0u8; 32];
            rand::rng().fill_bytes(&mut token);
            hex(&token)
        });
    Ok(CaMaterial { ca, join_token })
}

/// Publishes the root certificate in the ConfigMap gateways and sidecars mount.
pub(crate) async fn publish_root(
    client: &Client,
    namespace: &str,
    ca_pem: &str,
) -> Result<(), kube::Error> {
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CA_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(managed_labels()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            CA_CERT_KEY.to_string(),
            ca_pem.to_string(),
        )])),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            ROOT_CA_CONFIGMAP,
            &PatchParams::apply(CONTROLLER_MANAGER).force(),
            &Patch::Apply(&map),
        )
        .await?;
    Ok(())
}

/// The labels of every object the controller creates.
pub(crate) fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
