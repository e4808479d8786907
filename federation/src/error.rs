//! The crate's error types: [`FederationError`] for everything that stops the controller from
//! starting, and [`ApiError`], the one place where a refused API call becomes an HTTP status.

use std::path::PathBuf;

use http::{HeaderValue, Method, Response, StatusCode, header};
use mesh_core::http::{BodyError, BoxBody, text};
use mesh_core::identity::{CaError, TlsError};
use mesh_core::telemetry::BindError;

use crate::links::LinkError;
use crate::registry::StaticFileError;

/// Why the controller could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A command-line flag with a value the controller cannot use.
    #[error("invalid --{flag}: {reason}")]
    Config {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// A file of the state directory is missing or unusable.
    #[error("{path}: {reason}; {hint}")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// What to run to fix it.
        hint: String,
    },
    /// The CA could not issue the controller's own certificate.
    #[error("issuing the controller's serving certificate: {0}")]
    Ca(#[from] CaError),
    /// The control listener's TLS configuration was refused.
    #[error("control listener TLS: {0}")]
    Tls(#[from] TlsError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The static services file is invalid.
    #[error(transparent)]
    StaticServices(#[from] StaticFileError),
    /// The persisted links could not be loaded.
    #[error(transparent)]
    Links(#[from] LinkError),
    /// A Kubernetes object the controller needs could not be read or written (Kubernetes mode).
    #[error("{what}: {reason}")]
    Kubernetes {
        /// The object, named.
        what: String,
        /// What went wrong, and what to do.
        reason: String,
    },
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

/// A refused API call: every handler error maps to exactly one status here.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// No or wrong credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// A known path called with a method it does not support (405).
    #[error("{method} is not supported on {path}; use {allowed}")]
    MethodNotAllowed {
        /// The method used.
        method: Method,
        /// The path.
        path: String,
        /// The methods the path supports, comma-separated.
        allowed: &'static str,
    },
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// Not possible yet; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// Over a rate limit: retry after the wait (429 with `Retry-After`).
    #[error("{message}; retry in {}s", retry_after.as_secs())]
    TooManyRequests {
        /// What was limited, and whose limit.
        message: String,
        /// How long until a call may pass (whole seconds).
        retry_after: std::time::Duration,
    },
    /// A body that could not be read or decoded (400 or 413).
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The controller failed on its side (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Body(BodyError::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The plain-text answer for this error.
    pub fn response(&self) -> Response<BoxBody> {
        let mut rsp = text(self.status(), self.to_string());
        if let ApiError::MethodNotAllowed { allowed, .. } = self {
            rsp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        if let ApiError::TooManyRequests { retry_after, .. } = self {
            rsp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs()),
            );
        }
        if let ApiError::Unauthorized(_) = self {
            rsp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mesh\""),
            );
        }
        rsp
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::NotLinked(_) => ApiError::NotFound(e.to_string()),
            LinkError::Persist { .. } | LinkError::Corrupt { .. } => {
                ApiError::Internal(e.to_string())
            }
            LinkError::SelfLink(_) | LinkError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            LinkError::Conflict(_) => ApiError::Conflict(e.to_string()),
        }
    }
}

/// Turns a handler result into the answer.
pub(crate) fn into_response(result: Result<Response<BoxBody>, ApiError>) -> Response<BoxBody> {
    result.unwrap_or_else(|e| e.response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let err = ApiError::MethodNotAllowed {
            method: Method::PATCH,
            path: "/v1/links".into(),
            allowed: "GET, POST",
        };
        let rsp = err.response();
        assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(rsp.headers()[header::ALLOW], "GET, POST");
        assert_eq!(
            err.to_string(),
            "PATCH is not supported on /v1/links; use GET, POST"
        );
    }

    #[test]
    fn too_many_requests_says_when_to_retry() {
        let err = ApiError::TooManyRequests {
            message: "registrations of spiffe://us-east.mesh/ns/demo/sa/echo are over 100/s".into(),
            retry_after: std::time::Duration::from_secs(2),
        };
        let rsp = err.response();
        assert_eq!(rsp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rsp.headers()[header::RETRY_AFTER], "2");
        assert!(err.to_string().ends_with("retry in 2s"), "{err}");
    }

    #[test]
    fn body_errors_keep_their_status() {
        assert_eq!(
            ApiError::Body(BodyError::TooLarge(10)).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ApiError::Body(BodyError::Read("reset".into())).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
