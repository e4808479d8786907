//! The admin port every component exposes (`/healthz`, `/readyz`, `/metrics`, plus
//! component-specific routes), and the plain-HTTP
//! server it and the demo app share.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::admin_token::AdminAuth;
use crate::http::{BoxBody, full, text};
use crate::serve::Listening;

/// Whether a component is ready to serve; flipped by the component, read by `/readyz`. A
/// ready component may still be degraded (serving its last known state while a dependency is
/// away): the detail says how, after `ready` on the answer's next line.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<ReadinessState>);

#[derive(Debug, Default)]
struct ReadinessState {
    ready: AtomicBool,
    detail: Mutex<Option<String>>,
    /// Conditions other parts hold on readiness (e.g. `certificate`): `(ready, detail)`.
    conditions: Mutex<std::collections::BTreeMap<&'static str, (bool, String)>>,
}

impl Readiness {
    /// Marks ready or not.
    pub fn set(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether ready: the component says so and no condition holds it back.
    pub fn get(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst) && self.conditions().iter().all(|(_, (ok, _))| *ok)
    }

    /// Sets (or clears, with `None`) the condition `name`: whether it lets the component be
    /// ready, and a line for `/readyz` detail (the certificate renewal reports here).
    pub fn set_condition(&self, name: &'static str, state: Option<(bool, String)>) {
        let mut conditions = self.0.conditions.lock().unwrap_or_else(|p| p.into_inner());
        match state {
            Some(state) => conditions.insert(name, state),
            None => conditions.remove(name),
        };
    }

    fn conditions(&self) -> Vec<(&'static str, (bool, String))> {
        let conditions = self.0.conditions.lock().unwrap_or_else(|p| p.into_inner());
        conditions.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// Sets (or clears) what `/readyz` adds about a degraded state.
    pub fn set_detail(&self, detail: Option<String>) {
        *self.0.detail.lock().unwrap_or_else(|p| p.into_inner()) = detail;
    }

    /// The detail now set, then one line per condition.
    pub fn detail(&self) -> Option<String> {
        let own = self
            .0
            .detail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let lines: Vec<String> = own
            .into_iter()
            .chain(self.conditions().into_iter().map(|(_, (_, d))| d))
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// A boxed future answering one request.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>;

/// Component-specific admin routes; answer `None` for paths you do not own (404 follows).
pub trait AdminRoutes: Send + Sync + 'static {
    /// Handles a request, or returns it back as not owned.
    fn route(&self, req: Request<Incoming>) -> Option<ResponseFuture>;
}

/// The admin endpoint of one component.
pub struct AdminServer {
    registry: Arc<Registry>,
    readiness: Readiness,
    routes: Option<Arc<dyn AdminRoutes>>,
    auth: Option<AdminAuth>,
}

impl AdminServer {
    /// An admin server exposing `registry` and `readiness`, plus `routes` if given.
    pub fn new(
        registry: Arc<Registry>,
        readiness: Readiness,
        routes: Option<Arc<dyn AdminRoutes>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            readiness,
            routes,
            auth: None,
        })
    }

    /// Like [`AdminServer::new`], but every call whose method is not `GET` or `HEAD` must pass
    /// `auth` first (401 otherwise, before any route sees it).
    pub fn guarded(
        registry: Arc<Registry>,
        readiness: Readiness,
        routes: Option<Arc<dyn AdminRoutes>>,
        auth: AdminAuth,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            readiness,
            routes,
            auth: Some(auth),
        })
    }

    /// Answers one admin request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        if let Some(auth) = &self.auth
            && let Err(refused) = auth.check(req.method(), req.headers())
        {
            tracing::warn!(method = %req.method(), path = req.uri().path(), "admin call refused: no valid admin token");
            return *refused;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            (&Method::GET, "/readyz") => {
                let (status, word) = if self.readiness.get() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                };
                match self.readiness.detail() {
                    Some(detail) => text(status, format!("{word}\n{detail}")),
                    None => text(status, word),
                }
            }
            (&Method::GET, "/metrics") => self.metrics(),
            (_, "/healthz" | "/readyz" | "/metrics") => {
                let mut rsp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed here");
                rsp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET"));
                rsp
            }
            _ => match &self.routes {
                Some(routes) => {
                    let path = req.uri().path().to_string();
                    match routes.route(req) {
                        Some(fut) => fut.await,
                        None => text(StatusCode::NOT_FOUND, format!("no admin route {path}")),
                    }
                }
                None => text(
                    StatusCode::NOT_FOUND,
                    format!("no admin route {}", req.uri().path()),
                ),
            },
        }
    }

    fn metrics(&self) -> Response<BoxBody> {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics: {e}"),
            );
        }
        let mut rsp = Response::new(full(out));
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        rsp
    }

    /// Serves admin requests on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        serve_http(listener, move |req| self.clone().handle(req)).await
    }

    /// [`Self::serve`] within `listening`'s bounds: limits per connection, and how many
    /// connections at once.
    pub async fn serve_within(self: Arc<Self>, listener: TcpListener, listening: Listening) {
        let service = tower::service_fn(move |req| {
            let answer = self.clone().handle(req);
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let Listening { limits, cap } = listening;
        crate::serve::serve_plain_with(listener, "admin", limits, cap, service).await
    }
}

/// Accepts plain-text HTTP/1.1 and HTTP/2 (prior knowledge) connections on `listener` and
/// answers each request with `handler`, until the task is dropped (through the one accept loop,
/// [`crate::serve::serve_plain`]).
pub async fn serve_http<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let service = tower::service_fn(move |req| {
        let answer = handler(req);
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
    crate::serve::serve_plain(listener, "http", service).await
}
