//! Leader election over a `coordination.k8s.io` Lease: every replica serves discovery and the
//! CA; only the leader writes `ServiceImport`s, statuses and the published ConfigMaps.
//!
//! The rules are client-go's: a candidate takes the Lease when its holder has not renewed it
//! for the lease duration *as observed locally* (the renew time written by another machine's
//! clock is only compared with itself, so clock skew cannot make two leaders); every write is
//! guarded by the resource version, so two candidates racing for it cannot both win; a leader
//! that cannot renew for the lease duration steps down before anyone may take over; a leader
//! that stops releases the Lease, so the next one takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Lease settings.
#[derive(Debug, Clone)]
pub(crate) struct Election {
    /// The Lease.
    pub api: Api<Lease>,
    /// Its name.
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
}

/// What a candidate concluded from one look at the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Renew: this replica holds it.
    Renew,
    /// Take it: nobody holds it, or the holder let it lapse.
    Acquire,
    /// Someone else holds it.
    Follow,
}

/// What the candidate remembers of the Lease between looks.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// The holder and renew time last seen, and when they last changed here.
    last: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl Observed {
    /// Decides from `lease` at `now` (local clock).
    pub(crate) fn step(
        &mut self,
        lease: &LeaseSpec,
        me: &str,
        duration: Duration,
        now: Instant,
    ) -> Step {
        let holder = lease.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() == Some(me) {
            self.last = Some((holder, lease.renew_time.clone(), now));
            return Step::Renew;
        }
        let Some(other) = holder else {
            return Step::Acquire;
        };
        let changed = match &self.last {
            Some((h, r, _)) => h.as_deref() != Some(other.as_str()) || *r != lease.renew_time,
            None => true,
        };
        if changed {
            self.last = Some((Some(other), lease.renew_time.clone(), now));
        }
        let seen_at = self.last.as_ref().map_or(now, |(_, _, t)| *t);
        let duration = lease
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(duration, Duration::from_secs);
        if now.saturating_duration_since(seen_at) >= duration {
            Step::Acquire
        } else {
            Step::Follow
        }
    }
}

impl Election {
    /// Campaigns until `shutdown`, publishing whether this replica leads on `leading`.
    pub(crate) async fn run(
        self,
        leading: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let retry = self.lease_duration / 5;
        let mut observed = Observed::default();
        let mut renewed_at: Option<Instant> = None;
        loop {
            let lead = match self.attempt(&mut observed).await {
                Ok(lead) => {
                    if lead {
                        renewed_at = Some(Instant::now());
                    }
                    lead
                }
                Err(e) => {
                    tracing::debug!(error = %e, "leader election attempt failed");
                    // Keep leading only while the last renewal is still valid, with a margin
                    // before anyone else may take over.
                    renewed_at.is_some_and(|t| t.elapsed() < self.lease_duration - retry)
                }
            };
            if lead != *leading.borrow() {
                if lead {
                    tracing::info!(identity = %self.identity, "became the leader");
                } else {
                    tracing::warn!(identity = %self.identity, "no longer the leader");
                }
                leading.send_replace(lead);
            }
            if !lead {
                renewed_at = None;
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = shutdown.changed() => break,
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            self.release().await;
        }
    }

    /// One look at the Lease; true when this replica holds it afterwards.
    async fn attempt(&self, observed: &mut Observed) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        match observed.step(&spec, &self.identity, self.lease_duration, Instant::now()) {
            Step::Follow => return Ok(false),
            Step::Renew => spec.renew_time = Some(now),
            Step::Acquire => {
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        spec.lease_duration_seconds = Some(seconds);
        lease.spec = Some(spec);
        // The resource version in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so another replica takes over without waiting for it to lapse.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(identity = %self.identity, "leadership released"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing the leader lease failed; it lapses instead")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn spec(holder: Option<&str>, renew_secs: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(Timestamp::from_second(renew_secs).unwrap())),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_free_lease_is_taken_and_an_own_one_renewed() {
        let now = Instant::now();
        let mut seen = Observed::default();
        assert_eq!(seen.step(&spec(None, 0), "a", LEASE, now), Step::Acquire);
        assert_eq!(
            seen.step(&spec(Some(""), 0), "a", LEASE, now),
            Step::Acquire
        );
        assert_eq!(seen.step(&spec(Some("a"), 0), "a", LEASE, now), Step::Renew);
    }

    #[test]
    fn another_holder_is_followed_until_it_stops_renewing_for_a_lease_duration() {
        let t0 = Instant::now();
        let mut seen = Observed::default();
        assert_eq!(
            seen.step(&spec(Some("b"), 100), "a", LEASE, t0),
            Step::Follow
        );
        // It renews: the clock restarts, whatever its timestamps say.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            seen.step(&spec(Some("b"), 90), "a", LEASE, t1),
            Step::Follow
        );
        assert_eq!(
            seen.step(
                &spec(Some("b"), 90),
                "a",
                LEASE,
                t1 + Duration::from_secs(14)
            ),
            Step::Follow
        );
        // Silent for a whole lease duration, seen from here: take it.
        assert_eq!(
            seen.step(&spec(Some("b"), 90), "a", LEASE, t1 + LEASE),
            Step::Acquire
        );
    }

    #[test]
    fn a_new_candidate_waits_a_full_lease_duration_even_for_an_old_timestamp() {
        // A renew time long in the past by another machine's clock does not count: only what
        // this candidate observed does.
        let t0 = Instant::now();
        let mut seen = Observed::default();
        assert_eq!(seen.step(&spec(Some("b"), 0), "a", LEASE, t0), Step::Follow);
        assert_eq!(
            seen.step(&spec(Some("b"), 0), "a", LEASE, t0 + LEASE),
            Step::Acquire
        );
    }
}
