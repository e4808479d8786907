//! The webhook's HTTPS listener: `POST /inject` answered by [`review::answer`], with a
//! serving certificate from the cluster CA (DNS names of the controller's Service plus the
//! `--webhook-san` extras), reissued at half its validity.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_core::http::{BoxBody, full, read_body, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::WebhookConfig;
use super::review::{self, Context};
use super::settings::InjectionSettings;
use crate::control_listener::ServingTls;
use crate::metrics::InjectionLabels;

/// The path the MutatingWebhookConfiguration names.
pub(crate) const INJECT_PATH: &str = "/inject";
/// The API server sends whole pods; a few MiB is far beyond any real one (etcd's limit is 1.5).
const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// The API server waits `timeoutSeconds` (a few seconds); reading slower than this is not useful.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request is answered with.
pub(crate) struct Injector {
    /// The cluster's name.
    pub cluster: String,
    /// The controller's namespace.
    pub mesh_namespace: String,
    /// The cluster's root (PEM).
    pub root_pem: String,
    /// Flags of the webhook.
    pub config: WebhookConfig,
    /// `mesh_injection_total`.
    pub counter: Family<InjectionLabels, Counter>,
}

impl Injector {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        if req.uri().path() != INJECT_PATH {
            return text(
                StatusCode::NOT_FOUND,
                format!("the injection webhook answers POST {INJECT_PATH} only"),
            );
        }
        if req.method() != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{INJECT_PATH} takes POST of an AdmissionReview"),
            );
        }
        let body = match tokio::time::timeout(BODY_TIMEOUT, read_body(req.into_body(), BODY_LIMIT))
            .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                self.count(review::Outcome::Error);
                tracing::warn!(error = %e, "injection request body refused");
                return e.response();
            }
            Err(_) => {
                self.count(review::Outcome::Error);
                return text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the AdmissionReview did not arrive within {BODY_TIMEOUT:?}"),
                );
            }
        };
        let settings = InjectionSettings::load(&self.config.settings_file).await;
        let answer = review::answer(
            &body,
            settings.as_ref(),
            Context {
                cluster: &self.cluster,
                mesh_namespace: &self.mesh_namespace,
                root_pem: &self.root_pem,
            },
        );
        self.count(answer.outcome);
        match answer.outcome {
            review::Outcome::Error => {
                tracing::warn!(summary = %answer.summary, "injection failed; pod allowed unchanged")
            }
            review::Outcome::Refused => {
                tracing::info!(summary = %answer.summary, "injection refused the pod")
            }
            _ => tracing::debug!(summary = %answer.summary, "injection"),
        }
        let mut rsp = Response::new(full(answer.body));
        *rsp.status_mut() = answer.status;
        let content_type = if answer.status == StatusCode::OK {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        rsp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        rsp
    }

    fn count(&self, outcome: review::Outcome) {
        self.counter
            .get_or_create(&InjectionLabels {
                result: outcome.label().to_string(),
            })
            .inc();
    }
}

/// Serves `listener` with TLS from `tls` until `shutdown` flips; open connections end with it.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: ServingTls,
    injector: Arc<Injector>,
    mut shutdown: watch::Receiver<bool>,
) {
    let accept = mesh_core::serve::accept_loop(listener, "webhook", move |stream, peer| {
        let acceptor = tls.acceptor();
        let injector = injector.clone();
        async move {
            let Some(tls) =
                mesh_core::serve::tls_handshake(&acceptor, stream, peer, "webhook").await
            else {
                return;
            };
            let service = tower::service_fn(move |req| {
                let injector = injector.clone();
                async move { Ok::<_, Infallible>(injector.handle(req).await) }
            });
            mesh_core::serve::serve_connection(tls, peer, "webhook", service).await;
        }
    });
    tokio::select! {
        _ = accept => {}
        _ = shutdown.changed() => {}
    }
}

/// The server TLS configuration of the webhook: TLS 1.2 and 1.3 (the API server's Go client
/// speaks both), no client certificate, HTTP/2 or HTTP/1.1.
pub(crate) fn server_config(
    identity: &mesh_core::identity::WorkloadIdentity,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(identity.chain.clone(), identity.private_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The address the listener is bound to, for logs and the ready file.
pub(crate) fn bound(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
