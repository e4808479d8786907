//! Linking two running clusters through their controllers' admin APIs: trust bundles and
//! gateway addresses are exchanged both ways (idempotent), or revoked both ways.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use mesh_core::api::{LinkInfo, PATH_LINK_INFO, PATH_LINKS};

use crate::admin_client::{self, AdminError, AdminTokens};

/// Fetches a cluster's link info, waiting while its gateway has not reported (503).
pub async fn link_info(admin: SocketAddr, wait: Duration) -> Result<LinkInfo, AdminError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match admin_client::get_json::<LinkInfo>(admin, PATH_LINK_INFO).await {
            Err(e)
                if e.status() == Some(StatusCode::SERVICE_UNAVAILABLE)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Links the clusters whose controllers' admin APIs are at `a` and `b`, both directions,
/// with their admin tokens from `tokens` (both read before anything changes). Returns their
/// names.
pub async fn link_pair(
    a: SocketAddr,
    b: SocketAddr,
    tokens: &AdminTokens,
    wait: Duration,
) -> Result<(String, String), AdminError> {
    let info_a = link_info(a, wait).await?;
    let info_b = link_info(b, wait).await?;
    let token_a = tokens.token_for(a, &info_a.cluster)?;
    let token_b = tokens.token_for(b, &info_b.cluster)?;
    admin_client::send_json_with(a, Some(&token_a), Method::POST, PATH_LINKS, &info_b).await?;
    admin_client::send_json_with(b, Some(&token_b), Method::POST, PATH_LINKS, &info_a).await?;
    Ok((info_a.cluster, info_b.cluster))
}

/// Unlinks the two clusters, both directions, with their admin tokens from `tokens`. A side
/// that was not linked is not an error.
pub async fn unlink_pair(
    a: SocketAddr,
    b: SocketAddr,
    tokens: &AdminTokens,
) -> Result<(String, String), AdminError> {
    let info_a = admin_client::get_json::<LinkInfo>(a, PATH_LINK_INFO).await?;
    let info_b = admin_client::get_json::<LinkInfo>(b, PATH_LINK_INFO).await?;
    let token_a = tokens.token_for(a, &info_a.cluster)?;
    let token_b = tokens.token_for(b, &info_b.cluster)?;
    for (admin, token, peer) in [
        (a, &token_a, &info_b.cluster),
        (b, &token_b, &info_a.cluster),
    ] {
        let path = format!("{PATH_LINKS}/{peer}");
        match admin_client::call_with(admin, Some(token), Method::DELETE, &path, None).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((info_a.cluster, info_b.cluster))
}
