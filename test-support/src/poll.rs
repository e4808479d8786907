//! Waiting on a condition with a deadline: the one way tests wait for something to happen
//! (never a bare sleep followed by an assertion). Uses tokio's clock, so it also works on a
//! paused clock.

use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is checked: short next to the deadlines tests use (seconds), long
/// enough that a check doing an HTTP call does not load the machine.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A condition that did not hold before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub waited: Duration,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for: {}",
            self.waited, self.what
        )
    }
}

impl std::error::Error for TimedOut {}

/// Checks `cond` every [`POLL_INTERVAL`] until it holds (returns how long that took) or
/// `timeout` has passed (returns [`TimedOut`], for callers that add context before failing).
pub async fn wait_for(
    what: &str,
    timeout: Duration,
    mut cond: impl AsyncFnMut() -> bool,
) -> Result<Duration, TimedOut> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if cond().await {
            return Ok(start.elapsed());
        }
        if Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_string(),
                waited: timeout,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Like [`wait_for`], panicking with `what` when the deadline passes.
pub async fn eventually(
    what: &str,
    timeout: Duration,
    cond: impl AsyncFnMut() -> bool,
) -> Duration {
    match wait_for(what, timeout, cond).await {
        Ok(took) => took,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_condition_holds() {
        let mut checks = 0;
        let took = wait_for("the third check", Duration::from_secs(1), async || {
            checks += 1;
            checks == 3
        })
        .await
        .unwrap();
        assert_eq!(checks, 3);
        assert_eq!(took, POLL_INTERVAL * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_naming_what() {
        let err = wait_for("never", Duration::from_millis(100), async || false)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "timed out after 100ms waiting for: never");
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for: the impossible")]
    async fn eventually_panics_with_what() {
        eventually("the impossible", Duration::from_millis(50), async || false).await;
    }
}
