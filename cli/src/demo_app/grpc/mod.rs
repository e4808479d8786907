//! The demo app's gRPC echo (`echo.proto`): `mesh.demo.Echo/Say` answers the request's text
//! with the cluster and replica, `mesh.demo.Echo/Count` streams numbered replies with a delay
//! between them. Served on the app's HTTP port: a request is gRPC by its `content-type`
//! (`application/grpc...`), and arrives over HTTP/2 prior knowledge (h2c), which the listener
//! tells from HTTP/1.1 by the first bytes. Statuses as gRPC says: `grpc-status: 0` in the
//! trailers after the messages; a call refused before any message gets a *trailers-only*
//! answer (the status in the head): UNIMPLEMENTED for another method, INVALID_ARGUMENT for a
//! message that does not decode or asks too much, UNAVAILABLE when the admin port's fault
//! settings fail the request (so the mesh's handling of UNAVAILABLE can be seen).

pub mod wire;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use mesh_core::http::{BoxBody, BoxError, empty, read_body};
use tokio::time::Sleep;

use wire::{CountReply, CountRequest, SayReply, SayRequest, frame, unframe};

/// Path of the unary call.
pub const PATH_SAY: &str = "/mesh.demo.Echo/Say";
/// Path of the server-streaming call.
pub const PATH_COUNT: &str = "/mesh.demo.Echo/Count";
/// Largest request body read: the requests are a few bytes.
const MAX_REQUEST: usize = 1024 * 1024;
/// Most replies one `Count` streams.
pub const MAX_COUNT: u32 = 10_000;
/// Longest interval between two `Count` replies, in milliseconds.
pub const MAX_INTERVAL_MS: u32 = 60_000;

/// gRPC status codes the echo answers with.
mod code {
    pub(super) const OK: u32 = 0;
    pub(super) const INVALID_ARGUMENT: u32 = 3;
    pub(super) const UNIMPLEMENTED: u32 = 12;
    pub(super) const UNAVAILABLE: u32 = 14;
}

/// Who answers: the cluster and replica named in every reply.
#[derive(Debug, Clone)]
pub struct Replier {
    /// The app's cluster.
    pub cluster: String,
    /// The app's replica.
    pub replica: String,
}

/// Answers one gRPC call; `fail`: the fault settings fail this request (UNAVAILABLE).
pub async fn call<B>(req: Request<B>, who: &Replier, fail: bool) -> Response<BoxBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if fail {
        return trailers_only(code::UNAVAILABLE, "injected fault");
    }
    let path = req.uri().path().to_string();
    if path != PATH_SAY && path != PATH_COUNT {
        return trailers_only(code::UNIMPLEMENTED, &format!("unknown method {path}"));
    }
    let body = match read_body(req.into_body(), MAX_REQUEST).await {
        Ok(body) => body,
        Err(e) => return trailers_only(code::INVALID_ARGUMENT, &e.to_string()),
    };
    let message = match unframe(&body) {
        Ok(messages) if messages.len() == 1 => messages[0].to_vec(),
        Ok(messages) => {
            let why = format!("a unary request has one message, got {}", messages.len());
            return trailers_only(code::INVALID_ARGUMENT, &why);
        }
        Err(e) => return trailers_only(code::INVALID_ARGUMENT, &e.to_string()),
    };
    if path == PATH_SAY {
        say(&message, who)
    } else {
        count(&message, who)
    }
}

fn say(message: &[u8], who: &Replier) -> Response<BoxBody> {
    let request = match SayRequest::decode(message) {
        Ok(r) => r,
        Err(e) => return trailers_only(code::INVALID_ARGUMENT, &e.to_string()),
    };
    let reply = SayReply {
        text: request.text,
        cluster: who.cluster.clone(),
        replica: who.replica.clone(),
    };
    let body = http_body_util::Full::new(frame(&reply.encode()))
        .map_err(|e| -> BoxError { match e {} })
        .with_trailers(async { Some(Ok(status_trailers(code::OK))) })
        .boxed();
    grpc_response(body)
}

fn count(message: &[u8], who: &Replier) -> Response<BoxBody> {
    let request = match CountRequest::decode(message) {
        Ok(r) => r,
        Err(e) => return trailers_only(code::INVALID_ARGUMENT, &e.to_string()),
    };
    if request.count > MAX_COUNT || request.interval_ms > MAX_INTERVAL_MS {
        let why = format!(
            "count is at most {MAX_COUNT} and interval_ms at most {MAX_INTERVAL_MS}, got {} and {}",
            request.count, request.interval_ms
        );
        return trailers_only(code::INVALID_ARGUMENT, &why);
    }
    grpc_response(CountBody::new(request, who.clone()).boxed())
}

fn grpc_response(body: BoxBody) -> Response<BoxBody> {
    let mut rsp = Response::new(body);
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    rsp
}

fn status_trailers(status: u32) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    trailers
}

/// A call refused before any message: HTTP 200, the status and message in the head, no body.
pub fn trailers_only(status: u32, message: &str) -> Response<BoxBody> {
    let mut rsp = grpc_response(empty());
    rsp.headers_mut().extend(status_trailers(status));
    // grpc-message is percent-encoded; the echo's own messages are plain ASCII but for this.
    let encoded: String = message
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '%' => c.to_string(),
            other => {
                let mut buf = [0u8; 4];
                other
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        rsp.headers_mut().insert("grpc-message", v);
    }
    rsp
}

/// The body of a `Count` call: `count` framed replies, `interval` apart, then the OK trailers.
struct CountBody {
    request: CountRequest,
    who: Replier,
    sent: u32,
    wait: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl CountBody {
    fn new(request: CountRequest, who: Replier) -> Self {
        Self {
            request,
            who,
            sent: 0,
            wait: None,
            done: false,
        }
    }
}

impl Body for CountBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(wait) = &mut this.wait {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.wait = None;
        }
        if this.sent < this.request.count {
            this.sent += 1;
            let reply = CountReply {
                number: this.sent,
                cluster: this.who.cluster.clone(),
                replica: this.who.replica.clone(),
            };
            let interval = Duration::from_millis(this.request.interval_ms.into());
            if this.sent < this.request.count && !interval.is_zero() {
                this.wait = Some(Box::pin(tokio::time::sleep(interval)));
            }
            return Poll::Ready(Some(Ok(Frame::data(frame(&reply.encode())))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        this.done = true;
        Poll::Ready(Some(Ok(Frame::trailers(status_trailers(code::OK)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Replier {
        Replier {
            cluster: "eu-central".into(),
            replica: "echo-1".into(),
        }
    }

    fn request(path: &str, message: &[u8]) -> Request<BoxBody> {
        Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/grpc")
            .body(mesh_core::http::full(frame(message)))
            .unwrap()
    }

    #[tokio::test]
    async fn say_answers_with_who_and_an_ok_trailer() {
        let msg = SayRequest { text: "hi".into() }.encode();
        let rsp = call(request(PATH_SAY, &msg), &who(), false).await;
        assert_eq!(rsp.headers()["content-type"], "application/grpc");
        let collected = rsp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        let body = collected.to_bytes();
        let messages = unframe(&body).unwrap();
        let reply = SayReply::decode(messages[0]).unwrap();
        assert_eq!(reply.text, "hi");
        assert_eq!(reply.cluster, "eu-central");
        assert_eq!(reply.replica, "echo-1");
    }

    #[tokio::test]
    async fn count_streams_numbered_replies_apart() {
        let msg = CountRequest {
            count: 3,
            interval_ms: 50,
        }
        .encode();
        let started = tokio::time::Instant::now();
        let rsp = call(request(PATH_COUNT, &msg), &who(), false).await;
        let collected = rsp.into_body().collect().await.unwrap();
        // Two intervals: between the first and second reply, and the second and third.
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        let body = collected.to_bytes();
        let numbers: Vec<u32> = unframe(&body)
            .unwrap()
            .iter()
            .map(|m| CountReply::decode(m).unwrap().number)
            .collect();
        assert_eq!(numbers, [1, 2, 3]);
    }

    #[tokio::test]
    async fn refusals_are_trailers_only() {
        let rsp = call(request("/mesh.demo.Echo/Nope", b""), &who(), false).await;
        assert_eq!(rsp.headers()["grpc-status"], "12");
        assert!(rsp.body().is_end_stream());
        let big = CountRequest {
            count: MAX_COUNT + 1,
            interval_ms: 0,
        }
        .encode();
        let rsp = call(request(PATH_COUNT, &big), &who(), false).await;
        assert_eq!(rsp.headers()["grpc-status"], "3");
        let rsp = call(request(PATH_SAY, b""), &who(), true).await;
        assert_eq!(rsp.headers()["grpc-status"], "14");
        assert_eq!(rsp.headers()["grpc-message"], "injected fault");
        let rsp = trailers_only(3, "100% é");
        assert_eq!(rsp.headers()["grpc-message"], "100%25 %C3%A9");
    }
}
