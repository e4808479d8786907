//! Where the admin API's token comes from, decided from the flags: the token is always on.
//!
//! - Local mode: `--admin-token-file`, by default `admin-token` in the state directory,
//!   created (random, mode 0600) when missing; `mesh link` and `mesh up` read it there.
//! - Kubernetes mode: `--admin-token-file` names a file that must exist (the chart mounts
//!   Secret `mesh-admin-token`). Without it, an admin listener on loopback refuses every
//!   mutating call (links are `Link` objects there), and one on any other address is refused
//!   at start, naming the flag: nobody could authenticate, and anyone could reach it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mesh_core::admin_token::{ADMIN_TOKEN_FILE, AdminAuth, AdminToken, readable_by_others};

use crate::error::FederationError;

/// The admin token's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AdminTokenSource {
    /// The token in this file; created when missing if `create`.
    File {
        /// The file.
        path: PathBuf,
        /// Whether a missing file is created with a fresh token (local mode).
        create: bool,
    },
    /// No token: mutating admin calls are all refused (Kubernetes mode on loopback).
    None,
}

impl AdminTokenSource {
    /// The source the flags ask for: `flag` is `--admin-token-file`, `state_dir` the local
    /// mode's state directory (`None` in Kubernetes mode).
    pub(crate) fn from_flags(
        flag: Option<&Path>,
        state_dir: Option<&Path>,
        admin: SocketAddr,
    ) -> Result<Self, FederationError> {
        match (flag, state_dir) {
            (Some(path), dir) => Ok(Self::File {
                path: path.to_path_buf(),
                create: dir.is_some(),
            }),
            (None, Some(dir)) => Ok(Self::File {
                path: dir.join(ADMIN_TOKEN_FILE),
                create: true,
            }),
            (None, None) if admin.ip().is_loopback() => Ok(Self::None),
            (None, None) => Err(FederationError::Config {
                flag: "admin-token-file",
                reason: format!(
                    "is required: --admin {admin} is not a loopback address, and in Kubernetes \
                     mode there is no state directory to keep a token in; add \
                     --admin-token-file <file> (the chart mounts Secret mesh-admin-token) or \
                     bind --admin to 127.0.0.1"
                ),
            }),
        }
    }

    /// Loads (or creates) the token and returns the guard of the admin API.
    pub(crate) fn load(&self) -> Result<AdminAuth, FederationError> {
        let (path, create) = match self {
            Self::File { path, create } => (path, *create),
            Self::None => {
                return Ok(AdminAuth::refuse_all(
                    "Kubernetes mode without --admin-token-file: link clusters with `mesh link \
                     --kubeconfig A --kubeconfig B` (Link objects), or start the controller \
                     with --admin-token-file",
                ));
            }
        };
        let loaded = if create {
            AdminToken::load_or_create(path).map(|(token, created)| {
                if created {
                    tracing::info!(file = %path.display(), "admin token created");
                }
                token
            })
        } else {
            AdminToken::read(path)
        };
        let token = loaded.map_err(|e| FederationError::Config {
            flag: "admin-token-file",
            reason: e.to_string(),
        })?;
        if create && readable_by_others(path) {
            tracing::warn!(
                file = %path.display(),
                "the admin token file is readable by others than its owner: `chmod 600` it"
            );
        }
        Ok(AdminAuth::token(token, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: &str = "127.0.0.1:0";
    const ANY: &str = "0.0.0.0:15014";

    #[test]
    fn local_mode_defaults_to_the_state_directory_and_creates() {
        let source =
            AdminTokenSource::from_flags(None, Some(Path::new("/s/us-east")), ANY.parse().unwrap())
                .unwrap();
        assert_eq!(
            source,
            AdminTokenSource::File {
                path: "/s/us-east/admin-token".into(),
                create: true
            }
        );
    }

    #[test]
    fn kubernetes_mode_needs_the_flag_off_loopback() {
        let err = AdminTokenSource::from_flags(None, None, ANY.parse().unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("invalid --admin-token-file") && text.contains("0.0.0.0:15014"),
            "{text}"
        );
        assert_eq!(
            AdminTokenSource::from_flags(None, None, LOOPBACK.parse().unwrap()).unwrap(),
            AdminTokenSource::None
        );
        assert_eq!(
            AdminTokenSource::from_flags(
                Some(Path::new("/etc/mesh/admin/token")),
                None,
                ANY.parse().unwrap()
            )
            .unwrap(),
            AdminTokenSource::File {
                path: "/etc/mesh/admin/token".into(),
                create: false
            }
        );
    }

    #[test]
    fn a_missing_mounted_token_is_refused_naming_the_flag() {
        let source = AdminTokenSource::File {
            path: "/nonexistent/mesh/admin-token".into(),
            create: false,
        };
        let err = source.load().unwrap_err().to_string();
        assert!(
            err.starts_with("invalid --admin-token-file") && err.contains("/nonexistent/mesh"),
            "{err}"
        );
    }
}
