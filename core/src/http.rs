//! Small HTTP helpers shared by every component: the boxed body type, plain-text and JSON
//! answers, and bounded reading of request bodies.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A boxed, thread-safe error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type every component answers with.
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// An empty body.
pub fn empty() -> BoxBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A plain-text answer (a newline is appended).
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<BoxBody> {
    let mut body = msg.into();
    body.push('\n');
    let mut rsp = Response::new(full(body));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<BoxBody> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut rsp = Response::new(full(body));
            *rsp.status_mut() = status;
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            rsp
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding JSON: {e}"),
        ),
    }
}

/// Why a request body was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Larger than the limit.
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    /// The connection failed while reading.
    #[error("reading request body: {0}")]
    Read(String),
    /// Not the JSON expected.
    #[error("request body is not valid JSON for this call: {0}")]
    Json(#[from] serde_json::Error),
}

impl BodyError {
    /// The answer for this error (413 or 400).
    pub fn response(&self) -> Response<BoxBody> {
        let status = match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        text(status, self.to_string())
    }
}

/// Reads a whole body up to `limit` bytes.
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(BodyError::TooLarge(limit))
            } else {
                Err(BodyError::Read(e.to_string()))
            }
        }
    }
}

/// Reads and decodes a JSON body up to `limit` bytes.
pub async fn read_json<T, B>(body: B, limit: usize) -> Result<T, BodyError>
where
    T: DeserializeOwned,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let bytes = read_body(body, limit).await?;
    Ok(serde_json::from_slice(&bytes)?)
}
