//! The upstream server behind every path: plain HTTP/1.1 and HTTP/2 prior knowledge on one
//! port. `GET` answers a short text; any request with a body gets it back byte for byte.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_core::telemetry::{accept, bind_tcp, shutdown_signal};

use crate::error::BenchError;

/// `mesh-bench upstream`: the benchmark's upstream server.
#[derive(Debug, Clone, clap::Args)]
pub struct UpstreamArgs {
    /// Listener for plain HTTP/1.1 and HTTP/2 (prior knowledge).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Write a JSON ready file with the bound address (role `listen`) and the pid here.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: UpstreamArgs) -> Result<(), BenchError> {
    let listener = bind_tcp("bench-upstream", "listen", args.listen)
        .await
        .map_err(|e| BenchError::measure("binding the upstream", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::measure("upstream address", e))?;
    super::write_ready("bench-upstream", addr, args.ready_file.as_deref())?;
    tokio::select! {
        _ = serve(listener) => {}
        _ = shutdown_signal() => {}
    }
    Ok(())
}

/// Accepts connections on `listener` forever.
pub async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let (stream, _) = accept(&listener, "listen").await;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req| async move {
                Ok::<_, std::convert::Infallible>(answer(req).await)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            let mut rsp = Response::new(Full::new(Bytes::from_static(b"body broke\n")));
            *rsp.status_mut() = StatusCode::BAD_REQUEST;
            return rsp;
        }
    };
    if body.is_empty() {
        Response::new(Full::new(Bytes::from_static(b"ok\n")))
    } else {
        Response::new(Full::new(body))
    }
}
