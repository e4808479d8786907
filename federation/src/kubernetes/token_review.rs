//! Workload identity in Kubernetes: a ServiceAccount token presented to the CA is checked with
//! the API server's `TokenReview`, and the SPIFFE ID to sign comes from the token's namespace
//! and ServiceAccount, never from what the certificate request asks for.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};

/// The ServiceAccount a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceAccountRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl ServiceAccountRef {
    /// The ServiceAccount of a Kubernetes username `system:serviceaccount:<ns>:<name>`.
    pub(crate) fn from_username(username: &str) -> Option<Self> {
        let rest = username.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then(|| Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

/// Why a token was not accepted; the message goes back to the workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReviewError {
    /// The API server says the token is not valid (expired, wrong audience, deleted account).
    #[error("the ServiceAccount token was rejected by the API server: {0}")]
    Rejected(String),
    /// The token is valid but is not a ServiceAccount's.
    #[error("the token belongs to {0}, not to a ServiceAccount")]
    NotServiceAccount(String),
    /// The API server could not be asked.
    #[error("cannot review the token now (API server unreachable: {0}); retry")]
    Unavailable(String),
}

/// Future of a review.
pub(crate) type ReviewFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ServiceAccountRef, ReviewError>> + Send + 'a>>;

/// Says whose a token is.
pub(crate) trait TokenReviewer: Send + Sync + fmt::Debug {
    /// Reviews `token`.
    fn review<'a>(&'a self, token: &'a str) -> ReviewFuture<'a>;
}

/// Reviews tokens with the API server, for the audience the chart projects them with.
#[derive(Clone)]
pub(crate) struct ApiTokenReviewer {
    client: Client,
    audience: String,
}

impl fmt::Debug for ApiTokenReviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl ApiTokenReviewer {
    /// A reviewer asking `client`'s API server, accepting tokens for `audience`.
    pub(crate) fn new(client: Client, audience: &str) -> Self {
        Self {
            client,
            audience: audience.to_string(),
        }
    }
}

impl TokenReviewer for ApiTokenReviewer {
    fn review<'a>(&'a self, token: &'a str) -> ReviewFuture<'a> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: Some(vec![self.audience.clone()]),
                },
                ..TokenReview::default()
            };
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
            let status = answer.status.unwrap_or_default();
            if status.authenticated != Some(true) {
                return Err(ReviewError::Rejected(status.error.unwrap_or_else(|| {
                    format!(
                        "not authenticated for audience {:?} (project the token with that audience)",
                        self.audience
                    )
                })));
            }
            let username = status.user.and_then(|u| u.username).unwrap_or_default();
            ServiceAccountRef::from_username(&username)
                .ok_or(ReviewError::NotServiceAccount(username))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_usernames_are_parsed() {
        assert_eq!(
            ServiceAccountRef::from_username("system:serviceaccount:demo:echo"),
            Some(ServiceAccountRef {
                namespace: "demo".into(),
                name: "echo".into()
            })
        );
        for other in [
            "admin",
            "system:serviceaccount:demo",
            "system:serviceaccount::x",
            "system:serviceaccount:a:b:c",
        ] {
            assert_eq!(ServiceAccountRef::from_username(other), None, "{other}");
        }
    }
}
