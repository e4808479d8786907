//! Keeps the `caBundle` of the chart's MutatingWebhookConfiguration equal to the cluster's root,
//! so the API server trusts the webhook's certificate. Every replica does it (they hold the same
//! root, so they agree) and writes only when a webhook's bundle differs: a JSON Patch per
//! webhook entry, guarded by a `test` of the entry's name so a concurrent reorder cannot make it
//! patch the wrong one. The object is read every few seconds; when it is missing (the chart
//! without injection, or not installed yet) nothing is written.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use mesh_k8s::names::CONTROLLER_MANAGER;
use serde_json::{Value, json};
use tokio::sync::watch;

/// How often the configuration is checked: a reinstalled chart is trusted again within this.
const RESYNC: Duration = Duration::from_secs(5);

/// The JSON Patch operations that set every webhook's bundle of `config` to `root_pem`; empty
/// when they all hold it already.
pub(crate) fn bundle_patch(config: &MutatingWebhookConfiguration, root_pem: &str) -> Vec<Value> {
    let mut ops = Vec::new();
    for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
        let current = webhook.client_config.ca_bundle.as_ref().map(|b| &b.0[..]);
        if current == Some(root_pem.as_bytes()) {
            continue;
        }
        ops.push(
            json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}),
        );
        ops.push(json!({
            "op": "add",
            "path": format!("/webhooks/{i}/clientConfig/caBundle"),
            "value": k8s_openapi::ByteString(root_pem.as_bytes().to_vec()),
        }));
    }
    ops
}

/// Checks the configuration `name` every [`RESYNC`] and patches its bundles when they differ,
/// until `shutdown` flips.
pub(crate) async fn keep_patched(
    client: Client,
    name: String,
    root_pem: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut missing_logged = false;
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let config = match api.get_opt(&name).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                if !missing_logged {
                    tracing::info!(configuration = %name, "MutatingWebhookConfiguration not found; its caBundle will be set when it appears");
                    missing_logged = true;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(configuration = %name, error = %e, "cannot read the MutatingWebhookConfiguration; retrying");
                continue;
            }
        };
        missing_logged = false;
        let ops = bundle_patch(&config, &root_pem);
        if ops.is_empty() {
            continue;
        }
        let patch: json_patch::Patch = match serde_json::from_value(Value::Array(ops)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "the caBundle patch is malformed");
                continue;
            }
        };
        let params = PatchParams {
            field_manager: Some(CONTROLLER_MANAGER.into()),
            ..PatchParams::default()
        };
        match api.patch(&name, &params, &Patch::<()>::Json(patch)).await {
            Ok(_) => {
                tracing::info!(configuration = %name, "set the webhook's caBundle to the cluster's root")
            }
            // A concurrent change (another replica, a reinstall): the next round sees it.
            Err(e) => {
                tracing::warn!(configuration = %name, error = %e, "patching the caBundle failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, WebhookClientConfig};

    use super::*;

    fn config(bundles: &[Option<&str>]) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            webhooks: Some(
                bundles
                    .iter()
                    .enumerate()
                    .map(|(i, b)| MutatingWebhook {
                        name: format!("w{i}.mesh.dev"),
                        client_config: WebhookClientConfig {
                            ca_bundle: b.map(|b| k8s_openapi::ByteString(b.as_bytes().to_vec())),
                            ..WebhookClientConfig::default()
                        },
                        ..MutatingWebhook::default()
                    })
                    .collect(),
            ),
            ..MutatingWebhookConfiguration::default()
        }
    }

    #[test]
    fn only_differing_bundles_are_patched() {
        assert!(bundle_patch(&config(&[Some("root")]), "root").is_empty());
        let ops = bundle_patch(&config(&[Some("root"), None, Some("old")]), "root");
        assert_eq!(ops.len(), 4, "{ops:?}");
        assert_eq!(ops[0]["op"], "test");
        assert_eq!(ops[0]["path"], "/webhooks/1/name");
        assert_eq!(ops[0]["value"], "w1.mesh.dev");
        assert_eq!(ops[1]["path"], "/webhooks/1/clientConfig/caBundle");
        // Base64, as the API's `[]byte` fields travel.
        assert_eq!(ops[1]["value"], "cm9vdA==");
        assert_eq!(ops[3]["path"], "/webhooks/2/clientConfig/caBundle");
        let mut doc = serde_json::to_value(config(&[Some("root"), None, Some("old")])).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        let patched: MutatingWebhookConfiguration = serde_json::from_value(doc).unwrap();
        assert!(bundle_patch(&patched, "root").is_empty());
    }
}
