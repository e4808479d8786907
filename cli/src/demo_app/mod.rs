//! `mesh demo-app`: the demo `echo` service. It answers with the cluster and replica that served
//! the request and echoes request bodies byte for byte (streamed, never buffered whole), so
//! failover is visible by hand and body integrity can be checked by digest: a request with
//! `x-echo-digest: sha256` gets `x-echo-body-sha256` (the digest of the body the app received;
//! such bodies, up to 8 MiB, are buffered). Its admin port can inject faults (see [`faults`]).
//! A connection that does not start like HTTP (see `mesh_sidecar::transparent::sniff`) is
//! echoed back byte for byte: the demo's TCP echo, what the mesh carries as an opaque stream.
//! On the same port, a gRPC echo ([`grpc`], `echo.proto`: unary `mesh.demo.Echo/Say`,
//! server-streaming `mesh.demo.Echo/Count`) over HTTP/2 prior knowledge, and a WebSocket echo
//! on `/ws` ([`websocket`]).

pub mod faults;
pub mod grpc;
pub mod websocket;

use std::path::PathBuf;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_core::admin::{AdminServer, Readiness};
use mesh_core::api::ReadyFile;
use mesh_core::http::{BoxBody, full, read_body, text};
use mesh_core::serve::{accept_loop, serve_connection};
use mesh_core::telemetry::{BindError, bind_tcp, shutdown_signal};
use mesh_sidecar::outbound::grpc_status::is_grpc;
use mesh_sidecar::transparent::replayed::Replayed;
use mesh_sidecar::transparent::sniff::{Sniffed, sniff};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

// The demo app's header names are defined once, beside the load driver that reads them
// (`mesh_chaos::load`), since this crate depends on that one and not the other way round.
pub use mesh_chaos::load::{
    HEADER_ECHO_BODY_SHA256, HEADER_ECHO_CLUSTER, HEADER_ECHO_DIGEST, HEADER_ECHO_REPLICA,
};
/// Largest body buffered to digest it; larger ones are refused with 413 when a digest is asked.
const MAX_DIGEST_BODY: usize = 8 * 1024 * 1024;

pub use mesh_launcher::demo_app_args::DemoAppArgs;

/// Errors of the demo app.
#[derive(Debug, thiserror::Error)]
pub enum DemoAppError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The ready file could not be written.
    #[error("writing ready file {path}: {source}")]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status: u16,
}

struct DemoApp {
    cluster: HeaderValue,
    replica: HeaderValue,
    greeting: String,
    replier: grpc::Replier,
    requests: Family<RequestLabels, Counter>,
    faults: faults::Faults,
}

impl DemoApp {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        let method = req.method().clone();
        if is_grpc(req.headers()) || websocket::is_upgrade(&req) {
            let rsp = self.other_protocol(req).await;
            self.count(&method, &rsp);
            return rsp;
        }
        let seen = seen_request(&req);
        let fault = self.faults.decide();
        if !fault.delay.is_zero() {
            tokio::time::sleep(fault.delay).await;
        }
        let wants_digest = req
            .headers()
            .get(HEADER_ECHO_DIGEST)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"sha256"));
        let mut rsp = if fault.fail {
            text(StatusCode::INTERNAL_SERVER_ERROR, "injected fault")
        } else if method == Method::GET || method == Method::HEAD {
            text(StatusCode::OK, self.greeting.clone())
        } else if wants_digest {
            // Buffered so the digest can go in a header before the body.
            match read_body(req.into_body(), MAX_DIGEST_BODY).await {
                Ok(body) => {
                    let digest = hex::encode(Sha256::digest(&body));
                    let mut rsp = Response::new(full(body));
                    if let Ok(v) = HeaderValue::from_str(&digest) {
                        rsp.headers_mut().insert(HEADER_ECHO_BODY_SHA256, v);
                    }
                    octet_stream(&mut rsp);
                    rsp
                }
                Err(e) => e.response(),
            }
        } else {
            // Echo the body as it arrives: a 64 MiB upload streams through in constant memory.
            let body = req.into_body().map_err(|e| e.into()).boxed();
            let mut rsp = Response::new(body);
            octet_stream(&mut rsp);
            rsp
        };
        rsp.headers_mut()
            .insert(HEADER_ECHO_CLUSTER, self.cluster.clone());
        rsp.headers_mut()
            .insert(HEADER_ECHO_REPLICA, self.replica.clone());
        rsp.headers_mut().extend(seen);
        self.count(&method, &rsp);
        rsp
    }

    /// A gRPC call (faults apply: a failed one is UNAVAILABLE) or a WebSocket handshake.
    async fn other_protocol(&self, req: Request<Incoming>) -> Response<BoxBody> {
        if websocket::is_upgrade(&req) {
            return websocket::accept(req);
        }
        let fault = self.faults.decide();
        if !fault.delay.is_zero() {
            tokio::time::sleep(fault.delay).await;
        }
        let mut rsp = grpc::call(req, &self.replier, fault.fail).await;
        rsp.headers_mut()
            .insert(HEADER_ECHO_CLUSTER, self.cluster.clone());
        rsp.headers_mut()
            .insert(HEADER_ECHO_REPLICA, self.replica.clone());
        rsp
    }

    fn count(&self, method: &Method, rsp: &Response<BoxBody>) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                status: rsp.status().as_u16(),
            })
            .inc();
    }
}

/// What the app shows of a request in its answer, so routing filters can be seen from the
/// client: `x-echo-path` (path and query as received), `x-echo-host` (the Host), and every
/// request header whose name starts with `x-demo-`, as it arrived. A request can also choose
/// the answer's caching headers: `x-demo-cache-control` becomes its `Cache-Control`, and
/// `x-demo-vary` its `Vary` (to try the mesh's response cache).
fn seen_request<B>(req: &Request<B>) -> http::HeaderMap {
    let mut seen = http::HeaderMap::new();
    for (asked, answer) in [
        ("x-demo-cache-control", http::header::CACHE_CONTROL),
        ("x-demo-vary", http::header::VARY),
    ] {
        if let Some(v) = req.headers().get(asked) {
            seen.insert(answer, v.clone());
        }
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Ok(v) = HeaderValue::from_str(path) {
        seen.insert("x-echo-path", v);
    }
    let host = req.headers().get(http::header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(host) = host {
        seen.insert("x-echo-host", host);
    }
    for (name, value) in req.headers() {
        if name.as_str().starts_with("x-demo-") {
            seen.append(name.clone(), value.clone());
        }
    }
    seen
}

/// Serves HTTP, or echoes raw bytes, on every connection `listener` accepts.
async fn serve(listener: tokio::net::TcpListener, app: Arc<DemoApp>) {
    let service = tower::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
    });
    accept_loop(listener, "http", move |mut stream, peer| {
        let service = service.clone();
        async move {
            match sniff(&mut stream).await {
                Ok((prefix, Sniffed::Http)) => {
                    serve_connection(Replayed::new(prefix, stream), peer, "http", service).await
                }
                Ok((prefix, _)) => {
                    let (mut from, mut to) = stream.into_split();
                    if to.write_all(&prefix).await.is_ok() {
                        let _ = tokio::io::copy(&mut from, &mut to).await;
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "connection broke before a byte"),
            }
        }
    })
    .await
}

fn octet_stream(rsp: &mut Response<BoxBody>) {
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
}

/// Runs the demo app until SIGINT or SIGTERM.
pub async fn run(args: DemoAppArgs) -> Result<(), DemoAppError> {
    let header =
        |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    let mut registry = Registry::with_prefix("mesh_demo_app");
    let requests = Family::<RequestLabels, Counter>::default();
    registry.register(
        "requests",
        "Requests answered, by method and status",
        requests.clone(),
    );
    let app = Arc::new(DemoApp {
        cluster: header(&args.cluster),
        replica: header(&args.replica),
        greeting: format!(
            "echo from cluster={} replica={}",
            args.cluster, args.replica
        ),
        replier: grpc::Replier {
            cluster: args.cluster.clone(),
            replica: args.replica.clone(),
        },
        requests,
        faults: faults::Faults::default(),
    });
    let fault_routes: Arc<dyn mesh_core::admin::AdminRoutes> = Arc::new(app.faults.clone());
    let listener = bind_tcp("demo-app", "http", args.listen).await?;
    let admin_listener = bind_tcp("demo-app", "admin", args.admin).await?;
    let readiness = Readiness::default();
    let admin = AdminServer::new(Arc::new(registry), readiness.clone(), Some(fault_routes));
    let http_addr = listener
        .local_addr()
        .map_err(|e| mesh_core::telemetry::bind_error("demo-app", "http", args.listen, &e))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| mesh_core::telemetry::bind_error("demo-app", "admin", args.admin, &e))?;
    let serving = tokio::spawn(serve(listener, app));
    let admin_task = tokio::spawn(admin.serve(admin_listener));
    readiness.set(true);
    if let Some(path) = &args.ready_file {
        let ready = ReadyFile {
            component: "demo-app".into(),
            cluster: args.cluster.clone(),
            addrs: [
                ("listen".to_string(), http_addr),
                ("admin".to_string(), admin_addr),
            ]
            .into(),
            pid: std::process::id(),
        };
        ready
            .write(path)
            .map_err(|source| DemoAppError::ReadyFile {
                path: path.clone(),
                source,
            })?;
    }
    tracing::info!(%http_addr, %admin_addr, replica = %args.replica, "demo app serving");
    shutdown_signal().await;
    serving.abort();
    admin_task.abort();
    tracing::info!("demo app stopped");
    Ok(())
}
