//! Client-side fault injection for one route (issue 11, feature 6), pure: the spec a user
//! writes, in the shape of Istio's `HTTPFaultInjection`, and the per-request draw with the
//! randomness passed in. Sleeping, answering the abort, and counting and marking faulted
//! answers (Envoy's `DI` / `FI` response flags) belong to the sidecar layer.
//!
//! Two choices differ from Istio, both so that a mistake is refused at load rather than
//! silently changing nothing or the wrong thing:
//!
//! - `percentage` is required. Istio injects nothing when it is unset, so a forgotten field
//!   looks like a working fault that never fires; here its absence is a load error, and
//!   `percentage: 100` says "every request" explicitly.
//! - `httpStatus` must be 400..=599. Istio accepts any status, but an injected fault is an
//!   error answer: a 1xx is not a final answer, and a 2xx or 3xx with an empty body looks like
//!   success to the caller, so no resilience path would be exercised.
//!
//! Delay and abort are drawn independently, as in Envoy's fault filter: a request may be
//! delayed, then aborted.

use std::time::Duration;

use http::StatusCode;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Shortest injected delay: Istio's minimum, and below it the timer's own jitter dominates.
pub const MIN_DELAY: Duration = Duration::from_millis(1);

/// Why a fault spec is refused; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FaultError {
    /// The field, as the spec spells it (`abort.httpStatus`, `delay.percentage`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FaultError {
    /// The same error with `parent` in front of the field (`fault` gives `fault.abort.httpStatus`),
    /// for a caller that embeds the spec.
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            reason: self.reason,
        }
    }
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> FaultError {
    FaultError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Holding requests back before they are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DelayFault {
    /// How long a delayed request waits (at least 1 ms), e.g. `200ms`.
    #[serde(with = "humantime_serde")]
    pub fixed_delay: Duration,
    /// Share of requests delayed, in percent (0 to 100, fractions allowed); required.
    pub percentage: f64,
}

/// Answering requests with an error instead of sending them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AbortFault {
    /// The status answered (400 to 599).
    pub http_status: u16,
    /// Share of requests aborted, in percent (0 to 100, fractions allowed); required.
    pub percentage: f64,
}

/// The faults injected into one route's requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultSpec {
    /// A delay for some requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    /// An error answer for some requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortFault>,
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultDecision {
    /// Wait this long before going on.
    pub delay: Option<Duration>,
    /// Then answer this status instead of sending the request.
    pub abort: Option<StatusCode>,
}

impl FaultDecision {
    /// Whether the request is left alone.
    pub fn is_none(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }
}

fn check_percentage(value: f64, field: &str) -> Result<(), FaultError> {
    // `contains` is false for NaN, so NaN is refused too.
    if !(0.0..=100.0).contains(&value) {
        return Err(error(
            format!("{field}.percentage"),
            format!("{value} is not between 0 and 100"),
        ));
    }
    Ok(())
}

impl FaultSpec {
    /// Checks that something is injected, the delay's length, the abort's status and both
    /// percentages.
    pub fn validate(&self) -> Result<(), FaultError> {
        if self.delay.is_none() && self.abort.is_none() {
            return Err(error("delay", "a fault needs a delay, an abort or both"));
        }
        if let Some(delay) = &self.delay {
            if delay.fixed_delay < MIN_DELAY {
                return Err(error(
                    "delay.fixedDelay",
                    format!("{:?} is shorter than 1ms", delay.fixed_delay),
                ));
            }
            check_percentage(delay.percentage, "delay")?;
        }
        if let Some(abort) = &self.abort {
            if !(400..=599).contains(&abort.http_status) {
                return Err(error(
                    "abort.httpStatus",
                    format!(
                        "{} is not an error status (400 to 599): an injected abort must look \
                         like a failure to the caller",
                        abort.http_status
                    ),
                ));
            }
            check_percentage(abort.percentage, "abort")?;
        }
        Ok(())
    }

    /// Draws the faults of one request: each configured fault independently, with its
    /// percentage as the probability.
    pub fn decide(&self, rng: &mut impl Rng) -> FaultDecision {
        let delay = self
            .delay
            .as_ref()
            .filter(|d| hit(d.percentage, rng))
            .map(|d| d.fixed_delay);
        let abort = self
            .abort
            .as_ref()
            .filter(|a| hit(a.percentage, rng))
            .and_then(|a| StatusCode::from_u16(a.http_status).ok());
        FaultDecision { delay, abort }
    }
}

/// True with probability `percentage / 100`: a uniform draw in [0, 100) falls below it, so 0
/// never hits and 100 always does.
fn hit(percentage: f64, rng: &mut impl Rng) -> bool {
    rng.random::<f64>() * 100.0 < percentage
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn parse(yaml: &str) -> Result<FaultSpec, String> {
        serde_saphyr::from_str::<FaultSpec>(yaml).map_err(|e| e.to_string())
    }

    fn abort(status: u16, percentage: f64) -> FaultSpec {
        FaultSpec {
            delay: None,
            abort: Some(AbortFault {
                http_status: status,
                percentage,
            }),
        }
    }

    #[test]
    fn parses_the_user_shape() {
        let spec = parse(
            "delay: {fixedDelay: 200ms, percentage: 12.5}\n\
             abort: {httpStatus: 503, percentage: 20}\n",
        )
        .unwrap();
        spec.validate().unwrap();
        let delay = spec.delay.as_ref().unwrap();
        assert_eq!(delay.fixed_delay, Duration::from_millis(200));
        assert_eq!(delay.percentage, 12.5);
        assert_eq!(spec.abort.as_ref().unwrap().http_status, 503);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<FaultSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn a_missing_percentage_or_unknown_field_is_refused_at_parse() {
        let missing = parse("abort: {httpStatus: 503}\n").unwrap_err();
        assert!(missing.contains("percentage"), "{missing}");
        let unknown = parse("abort: {httpStatus: 503, percentage: 1, grpcStatus: 14}\n");
        assert!(unknown.unwrap_err().contains("grpcStatus"));
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let field_of = |yaml: &str| {
            let e = parse(yaml).unwrap().validate().unwrap_err();
            e.field
        };
        assert_eq!(field_of("{}\n"), "delay");
        assert_eq!(
            field_of("delay: {fixedDelay: 500us, percentage: 1}\n"),
            "delay.fixedDelay"
        );
        assert_eq!(
            field_of("delay: {fixedDelay: 1s, percentage: 100.5}\n"),
            "delay.percentage"
        );
        assert_eq!(
            field_of("abort: {httpStatus: 503, percentage: -1}\n"),
            "abort.percentage"
        );
        assert_eq!(
            field_of("abort: {httpStatus: 200, percentage: 1}\n"),
            "abort.httpStatus"
        );
        assert_eq!(
            field_of("abort: {httpStatus: 600, percentage: 1}\n"),
            "abort.httpStatus"
        );
        assert!(abort(503, f64::NAN).validate().is_err());
        assert_eq!(
            abort(302, 5.0)
                .validate()
                .unwrap_err()
                .within("fault")
                .field,
            "fault.abort.httpStatus"
        );
        abort(400, 0.0).validate().unwrap();
        abort(599, 100.0).validate().unwrap();
    }

    #[test]
    fn twenty_percent_aborts_land_near_twenty_percent() {
        let spec = abort(503, 20.0);
        let mut rng = StdRng::seed_from_u64(11);
        let aborted = (0..10_000)
            .filter(|_| {
                let d = spec.decide(&mut rng);
                assert_eq!(d.delay, None);
                d.abort
                    .is_some_and(|s| s == StatusCode::SERVICE_UNAVAILABLE)
            })
            .count();
        // One standard deviation is 40 draws (0.4 points): 1.5 points is nearly 4 of them.
        assert!((1_850..=2_150).contains(&aborted), "{aborted}");
    }

    #[test]
    fn zero_and_hundred_percent_are_exact_and_faults_are_drawn_independently() {
        let mut rng = StdRng::seed_from_u64(3);
        let never = abort(500, 0.0);
        let always = abort(500, 100.0);
        for _ in 0..1_000 {
            assert!(never.decide(&mut rng).is_none());
            assert_eq!(
                always.decide(&mut rng).abort,
                Some(StatusCode::INTERNAL_SERVER_ERROR)
            );
        }
        let both = FaultSpec {
            delay: Some(DelayFault {
                fixed_delay: Duration::from_millis(200),
                percentage: 50.0,
            }),
            abort: Some(AbortFault {
                http_status: 503,
                percentage: 50.0,
            }),
        };
        let mut counts = [0usize; 4];
        for _ in 0..4_000 {
            let d = both.decide(&mut rng);
            counts[usize::from(d.delay.is_some()) * 2 + usize::from(d.abort.is_some())] += 1;
            if let Some(delay) = d.delay {
                assert_eq!(delay, Duration::from_millis(200));
            }
        }
        // Independent halves: each of the four combinations near a quarter.
        for c in counts {
            assert!((850..=1_150).contains(&c), "{counts:?}");
        }
    }
}
