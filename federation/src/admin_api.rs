//! The controller's admin routes (beside `/healthz`, `/readyz` and `/metrics`): link
//! management for `mesh link` / `mesh unlink`, `/v1/status` for `mesh status`, and
//! `/v1/policy`: the traffic policy in force and why the latest version was refused.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_core::admin::{AdminRoutes, ResponseFuture};
use mesh_core::api::{LinkInfo, PATH_LINK_INFO, PATH_LINKS, PATH_POLICY, PATH_STATUS};
use mesh_core::http::{BoxBody, json, read_json};
use mesh_core::identity::rotation::{PATH_CA_ROTATION, RotationRequest};
use serde::Serialize;

use crate::ca_rotation::CaRotation;
use crate::controller::Controller;
use crate::error::{ApiError, into_response};
use crate::links::LinkChange;
use crate::policy_board::PolicyBoard;

/// Largest link info body (a trust bundle is a few KiB).
const MAX_LINK_BODY: usize = 1024 * 1024;

/// The answer to `POST /v1/links`.
#[derive(Debug, Serialize)]
struct LinkAnswer {
    cluster: String,
    change: LinkChange,
}

/// The admin routes of the controller.
#[derive(Debug, Clone)]
pub(crate) struct AdminApi {
    controller: Arc<Controller>,
    policy: Arc<PolicyBoard>,
    rotation: Arc<CaRotation>,
}

impl AdminApi {
    /// The routes over `controller`.
    pub(crate) fn new(
        controller: Arc<Controller>,
        policy: Arc<PolicyBoard>,
        rotation: Arc<CaRotation>,
    ) -> Self {
        Self {
            controller,
            policy,
            rotation,
        }
    }

    async fn rotation_step(&self, req: Request<Incoming>) -> Result<Response<BoxBody>, ApiError> {
        let request: RotationRequest = read_json(req.into_body(), MAX_LINK_BODY).await?;
        let status = self.rotation.step(&self.controller, request.step)?;
        Ok(json(StatusCode::OK, &status))
    }

    fn link_info(&self) -> Result<Response<BoxBody>, ApiError> {
        let info = self
            .controller
            .read(|state, _| state.link_info())
            .ok_or_else(|| {
                ApiError::Unavailable(
                "gateway has not reported yet: its QUIC address is part of the link info; start \
                 `mesh gateway` for this cluster and retry"
                    .into(),
            )
            })?;
        Ok(json(StatusCode::OK, &info))
    }

    async fn add_link(&self, req: Request<Incoming>) -> Result<Response<BoxBody>, ApiError> {
        let info: LinkInfo = read_json(req.into_body(), MAX_LINK_BODY).await?;
        let cluster = info.cluster.clone();
        let region = info.region.clone();
        let gateway = info.gateway_addr;
        let change = self.controller.update(|state, _| state.add_link(info))?;
        if change != LinkChange::Unchanged {
            tracing::info!(peer = %cluster, %region, %gateway, ?change, "linked");
        }
        let status = if change == LinkChange::Created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(json(status, &LinkAnswer { cluster, change }))
    }

    fn remove_link(&self, cluster: &str) -> Result<Response<BoxBody>, ApiError> {
        let removed = self
            .controller
            .update(|state, _| state.remove_link(cluster))?;
        tracing::info!(peer = %cluster, "unlinked: trust and catalog dropped");
        Ok(json(StatusCode::OK, &removed))
    }

    async fn dispatch(&self, req: Request<Incoming>) -> Result<Response<BoxBody>, ApiError> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let not_allowed = |allowed| ApiError::MethodNotAllowed {
            method: method.clone(),
            path: path.clone(),
            allowed,
        };
        match path.as_str() {
            PATH_LINK_INFO if method == Method::GET => self.link_info(),
            PATH_LINK_INFO => Err(not_allowed("GET")),
            PATH_LINKS if method == Method::GET => Ok(json(
                StatusCode::OK,
                &self.controller.read(|s, _| s.links()),
            )),
            PATH_LINKS if method == Method::POST => self.add_link(req).await,
            PATH_LINKS => Err(not_allowed("GET, POST")),
            PATH_STATUS if method == Method::GET => Ok(json(
                StatusCode::OK,
                &self.controller.read(|s, now| s.status(now)),
            )),
            PATH_STATUS => Err(not_allowed("GET")),
            PATH_POLICY if method == Method::GET => Ok(json(StatusCode::OK, &self.policy.report())),
            PATH_POLICY => Err(not_allowed("GET")),
            PATH_CA_ROTATION if method == Method::GET => Ok(json(
                StatusCode::OK,
                &self.rotation.status(&self.controller),
            )),
            PATH_CA_ROTATION if method == Method::POST => self.rotation_step(req).await,
            PATH_CA_ROTATION => Err(not_allowed("GET, POST")),
            _ => match link_segment(&path) {
                Some(cluster) if method == Method::DELETE => self.remove_link(cluster),
                Some(_) => Err(not_allowed("DELETE")),
                None => Err(ApiError::NotFound(format!("no admin route {path}"))),
            },
        }
    }
}

/// The `{cluster}` of `/v1/links/{cluster}`.
fn link_segment(path: &str) -> Option<&str> {
    path.strip_prefix(PATH_LINKS)?
        .strip_prefix('/')
        .filter(|c| !c.is_empty() && !c.contains('/'))
}

/// Whether the admin routes own `path` (others answer the admin server's 404).
fn owns(path: &str) -> bool {
    matches!(
        path,
        PATH_LINK_INFO | PATH_LINKS | PATH_STATUS | PATH_POLICY | PATH_CA_ROTATION
    ) || link_segment(path).is_some()
}

impl AdminRoutes for AdminApi {
    fn route(&self, req: Request<Incoming>) -> Option<ResponseFuture> {
        if !owns(req.uri().path()) {
            return None;
        }
        let api = self.clone();
        Some(Box::pin(
            async move { into_response(api.dispatch(req).await) },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_paths_are_recognised() {
        assert_eq!(link_segment("/v1/links/eu-central"), Some("eu-central"));
        assert_eq!(link_segment("/v1/links/"), None);
        assert_eq!(link_segment("/v1/links"), None);
        assert_eq!(link_segment("/v1/linksx"), None);
        assert!(owns("/v1/status") && owns("/v1/links/eu") && !owns("/v1/other"));
    }
}
