//! Discovery streams: NDJSON bodies (one JSON message and `\n` each) that send a subscriber
//! its projection of the published view at once, then again whenever that projection changes.
//! A slow subscriber never queues stale snapshots: the producer always projects the latest
//! view, and the channel to the body holds one message.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body::Frame;
use http_body_util::BodyExt;
use mesh_core::http::{BoxBody, BoxError};
use mesh_core::names::ServiceKey;
use tokio::sync::{mpsc, watch};

use crate::controller::Controller;
use crate::error::ApiError;
use crate::metrics::SubscriberGuard;
use crate::view::{PublishedView, Snapshot};

/// Most services one sidecar may subscribe to in one stream.
const MAX_SERVICES_PER_STREAM: usize = 1_000;

/// Reads `services=a.b,c.d` from a query string; every name must be `name.namespace`.
pub(crate) fn parse_services_query(query: Option<&str>) -> Result<Vec<ServiceKey>, ApiError> {
    let mut keys = BTreeSet::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "services" {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{name}`; use ?services=<svc>.<ns>,<svc>.<ns>"
            )));
        }
        let value = value.replace("%2C", ",").replace("%2c", ",");
        for raw in value.split(',').filter(|s| !s.is_empty()) {
            let key: ServiceKey = raw.parse().map_err(|e| {
                ApiError::BadRequest(format!("bad service name `{raw}` in services: {e}"))
            })?;
            keys.insert(key);
        }
    }
    if keys.len() > MAX_SERVICES_PER_STREAM {
        return Err(ApiError::BadRequest(format!(
            "a stream may ask for at most {MAX_SERVICES_PER_STREAM} services, this one asks for {}",
            keys.len()
        )));
    }
    Ok(keys.into_iter().collect())
}

/// The stream of [`mesh_core::api::SidecarSnapshot`]s for `services`.
pub(crate) fn sidecar_stream(
    controller: &Arc<Controller>,
    services: Vec<ServiceKey>,
) -> Response<BoxBody> {
    let guard = controller.metrics().subscriber("sidecar");
    ndjson_response(controller, guard, move |view| {
        view.sidecar_snapshot(&services)
    })
}

/// The stream of [`mesh_core::api::GatewaySnapshot`]s.
pub(crate) fn gateway_stream(controller: &Arc<Controller>) -> Response<BoxBody> {
    let guard = controller.metrics().subscriber("gateway");
    ndjson_response(controller, guard, PublishedView::gateway_snapshot)
}

fn ndjson_response<T: Snapshot>(
    controller: &Arc<Controller>,
    guard: SubscriberGuard,
    project: impl Fn(&PublishedView) -> T + Send + 'static,
) -> Response<BoxBody> {
    let (tx, rx) = mpsc::channel(1);
    let views = controller.subscribe();
    let shutdown = controller.shutdown_signal();
    tokio::spawn(produce(views, shutdown, tx, guard, project));
    let mut rsp = Response::new(NdjsonBody { rx }.boxed());
    let headers = rsp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    rsp
}

/// Sends the subscriber's projection whenever it changes, until the subscriber goes away or
/// the controller shuts down (which ends the body cleanly, so clients reconnect).
async fn produce<T: Snapshot>(
    mut views: watch::Receiver<Arc<PublishedView>>,
    mut shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Bytes>,
    _guard: SubscriberGuard,
    project: impl Fn(&PublishedView) -> T,
) {
    let mut last: Option<T> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let msg = {
            let view = views.borrow_and_update();
            project(&view)
        };
        if last.as_ref().is_none_or(|l| !l.same_content(&msg)) {
            let mut line = match serde_json::to_vec(&msg) {
                Ok(line) => line,
                Err(e) => {
                    tracing::error!(error = %e, "encoding a snapshot failed; closing the stream");
                    return;
                }
            };
            line.push(b'\n');
            tokio::select! {
                sent = tx.send(Bytes::from(line)) => if sent.is_err() { return },
                _ = shutdown.changed() => return,
            }
            last = Some(msg);
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
            () = tx.closed() => return,
        }
    }
}

/// A response body fed by the producer task; dropping it (the client went away) ends the task.
struct NdjsonBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for NdjsonBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_query_is_parsed_sorted_and_deduplicated() {
        let keys = parse_services_query(Some("services=other.ns,echo.demo,echo.demo")).unwrap();
        let names: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["echo.demo", "other.ns"]);
        assert!(parse_services_query(None).unwrap().is_empty());
        assert!(parse_services_query(Some("services=")).unwrap().is_empty());
        assert_eq!(
            parse_services_query(Some("services=a.b%2Cc.d"))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn bad_names_are_named() {
        let err = parse_services_query(Some("services=echo.demo,Bad_Name")).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("`Bad_Name`"), "{err}");
        let err = parse_services_query(Some("service=echo.demo")).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown query parameter `service`"),
            "{err}"
        );
    }
}
