//! Request mirroring (the Gateway API's `RequestMirror` filter), for the route layer: a copy of
//! a share of a rule's requests goes to another service through the rest of the outbound stack
//! (balancing, failover, retries), in a task of its own whose answer is discarded, so a mirror
//! never slows or fails the request. Its copy carries no rule settings (no fault, rate limit or
//! cache of the rule applies to it).
//!
//! The body is copied only when it is small and its length known up front (empty bodies
//! included): buffering a large or streamed body to copy it would delay the request; such a
//! request is not mirrored, and says so in the log.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, Limited};
use mesh_core::http::{BoxBody, BoxError};
use mesh_core::names::{Destination, ServiceKey};
use mesh_core::policy::filters::Mirror;
use rand::Rng;
use tower::{Service, ServiceExt};

use super::errors::ProxyError;
use crate::facts::Resolved;
use crate::state::SidecarState;

/// A request body below the route layer: the app's, or a buffered copy.
pub type RoutedBody<B> = Either<B, Full<Bytes>>;

/// Largest request body mirrored: enough for API calls, small enough that buffering it costs
/// the request nothing noticeable.
pub const MAX_MIRRORED_BODY: u64 = 64 * 1024;

/// The mirrors of a rule that this request goes to, each drawn by its share.
pub fn drawn<'a>(mirrors: impl Iterator<Item = &'a Mirror>, rng: &mut impl Rng) -> Vec<Mirror> {
    mirrors
        .filter(|m| rng.random_range(0..1_000_000) < m.per_million)
        .cloned()
        .collect()
}

/// The request's body, buffered when a copy is wanted and it is small enough: the body to
/// send on, and the copy for the mirrors (`None`: not mirrored).
pub async fn buffer_for_copy<B>(
    body: B,
    wanted: bool,
    service: &ServiceKey,
) -> Result<(RoutedBody<B>, Option<Bytes>), ProxyError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let known = body.is_end_stream()
        || body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MAX_MIRRORED_BODY);
    if !wanted || !known {
        if wanted {
            tracing::debug!("request not mirrored: its body is streamed or above 64 KiB");
        }
        return Ok((Either::Left(body), None));
    }
    let bytes = Limited::new(body, MAX_MIRRORED_BODY as usize)
        .collect()
        .await
        .map_err(|e| ProxyError::RequestBody {
            service: service.clone(),
            reason: e.to_string(),
        })?
        .to_bytes();
    Ok((Either::Right(Full::new(bytes.clone())), Some(bytes)))
}

/// Sends a copy of the request (`parts`, `body`) to each of `mirrors` through `next`, in
/// tasks of their own, bounded by the sidecar's request timeout.
pub fn send<S, B>(
    state: &Arc<SidecarState>,
    next: &S,
    parts: &Parts,
    body: Bytes,
    mirrors: Vec<Mirror>,
) where
    S: Service<Request<RoutedBody<B>>, Response = http::Response<BoxBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    for mirror in mirrors {
        let mut copy = Request::new(Either::Right(Full::new(body.clone())));
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts.uri.clone();
        *copy.version_mut() = parts.version;
        *copy.headers_mut() = parts.headers.clone();
        let (state, next) = (state.clone(), next.clone());
        tokio::spawn(async move {
            let dest = Destination {
                service: mirror.service.clone(),
                cluster: None,
            };
            let sent = async {
                let snapshot = state.route(&dest).await?;
                copy.extensions_mut().insert(Resolved { dest, snapshot });
                next.oneshot(copy).await
            };
            match tokio::time::timeout(state.request_timeout(), sent).await {
                Ok(Ok(rsp)) => {
                    tracing::debug!(service = %mirror.service, status = %rsp.status(), "mirrored")
                }
                Ok(Err(e)) => {
                    tracing::debug!(service = %mirror.service, error = %e, "mirror failed")
                }
                Err(_) => tracing::debug!(service = %mirror.service, "mirror timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn echo() -> ServiceKey {
        "echo.demo".parse().unwrap()
    }

    #[test]
    fn mirrors_are_drawn_by_their_share() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let tenth = Mirror {
            service: "shadow.demo".parse().unwrap(),
            per_million: 100_000,
        };
        let drawn = (0..10_000)
            .filter(|_| !drawn(std::iter::once(&tenth), &mut rng).is_empty())
            .count();
        assert!((800..1200).contains(&drawn), "{drawn}");
    }

    #[tokio::test]
    async fn small_known_bodies_are_copied_and_others_pass_untouched() {
        let (body, copy) = buffer_for_copy(Full::new(Bytes::from_static(b"hello")), true, &echo())
            .await
            .unwrap();
        assert_eq!(copy.as_deref(), Some(&b"hello"[..]));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        let big = Full::new(Bytes::from(vec![0u8; MAX_MIRRORED_BODY as usize + 1]));
        let (body, copy) = buffer_for_copy(big, true, &echo()).await.unwrap();
        assert!(copy.is_none());
        assert!(matches!(body, Either::Left(_)));
        let (_, copy) = buffer_for_copy(Full::new(Bytes::from_static(b"x")), false, &echo())
            .await
            .unwrap();
        assert!(copy.is_none());
    }
}
