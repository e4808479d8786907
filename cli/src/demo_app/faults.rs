//! Injected endpoint faults of the demo app, set on its admin port: answer 500 or add latency
//! for a share of requests, so the chaos suite can make an endpoint fail or slow down without
//! killing it.
//!
//! `POST /v1/faults` with `{"error_share": 0.5, "latency_ms": 500, "latency_share": 1.0}` sets
//! them (missing fields are 0), `DELETE /v1/faults` clears them, `GET /v1/faults` shows them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use mesh_core::admin::{AdminRoutes, ResponseFuture};
use mesh_core::http::{json, read_json, text};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Admin path of the fault settings.
pub const PATH_FAULTS: &str = "/v1/faults";
/// Largest latency that can be injected: a fault, not a hang.
const MAX_LATENCY_MS: u64 = 60_000;
/// Largest fault settings body.
const MAX_BODY: usize = 4096;

/// What the app does wrong, and to which share of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSettings {
    /// Share of requests answered with 500, in [0, 1].
    pub error_share: f64,
    /// Latency added to the requests it applies to, in milliseconds.
    pub latency_ms: u64,
    /// Share of requests that get the latency, in [0, 1].
    pub latency_share: f64,
}

impl FaultSettings {
    fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("error_share", self.error_share),
            ("latency_share", self.latency_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(format!(
                "latency_ms must be at most {MAX_LATENCY_MS}, got {}",
                self.latency_ms
            ));
        }
        Ok(())
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultDecision {
    /// Wait this long first.
    pub delay: Duration,
    /// Then answer 500.
    pub fail: bool,
}

/// The current fault settings, shared by the request path and the admin routes.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<FaultSettings>>);

impl Faults {
    /// The settings now.
    pub fn get(&self) -> FaultSettings {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, s: FaultSettings) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// Decides the fate of one request.
    pub fn decide(&self) -> FaultDecision {
        let s = self.get();
        if s == FaultSettings::default() {
            return FaultDecision {
                delay: Duration::ZERO,
                fail: false,
            };
        }
        let mut rng = rand::rng();
        let slow = rng.random::<f64>() < s.latency_share;
        let fail = rng.random::<f64>() < s.error_share;
        FaultDecision {
            delay: if slow {
                Duration::from_millis(s.latency_ms)
            } else {
                Duration::ZERO
            },
            fail,
        }
    }
}

impl AdminRoutes for Faults {
    fn route(&self, req: Request<Incoming>) -> Option<ResponseFuture> {
        if req.uri().path() != PATH_FAULTS {
            return None;
        }
        let faults = self.clone();
        Some(Box::pin(async move {
            match *req.method() {
                Method::GET => json(StatusCode::OK, &faults.get()),
                Method::DELETE => {
                    faults.set(FaultSettings::default());
                    tracing::info!("injected faults cleared");
                    json(StatusCode::OK, &faults.get())
                }
                Method::POST | Method::PUT => {
                    let s: FaultSettings = match read_json(req.into_body(), MAX_BODY).await {
                        Ok(s) => s,
                        Err(e) => return e.response(),
                    };
                    if let Err(e) = s.validate() {
                        return text(StatusCode::BAD_REQUEST, e);
                    }
                    faults.set(s);
                    tracing::info!(
                        error_share = s.error_share,
                        latency_ms = s.latency_ms,
                        latency_share = s.latency_share,
                        "faults injected"
                    );
                    json(StatusCode::OK, &s)
                }
                _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET, POST or DELETE"),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_settings_no_fault_and_full_shares_always_apply() {
        let f = Faults::default();
        assert_eq!(
            f.decide(),
            FaultDecision {
                delay: Duration::ZERO,
                fail: false
            }
        );
        f.set(FaultSettings {
            error_share: 1.0,
            latency_ms: 20,
            latency_share: 1.0,
        });
        assert_eq!(
            f.decide(),
            FaultDecision {
                delay: Duration::from_millis(20),
                fail: true
            }
        );
        f.set(FaultSettings {
            error_share: 0.5,
            ..FaultSettings::default()
        });
        let fails = (0..2000).filter(|_| f.decide().fail).count();
        assert!((800..1200).contains(&fails), "{fails}");
    }

    #[test]
    fn settings_are_validated() {
        assert!(
            FaultSettings {
                error_share: 1.5,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            FaultSettings {
                latency_ms: 120_000,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            FaultSettings {
                error_share: 0.2,
                latency_ms: 500,
                latency_share: 0.5
            }
            .validate()
            .is_ok()
        );
        let parsed: Result<FaultSettings, _> =
            serde_json::from_str(r#"{"error_share":0.1,"colour":1}"#);
        assert!(parsed.is_err(), "unknown fields are refused");
    }
}
