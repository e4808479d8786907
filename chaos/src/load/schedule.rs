//! The open-loop schedule, the one pacing of every load generator in the workspace (the chaos
//! driver here, `mesh-bench`'s precision runs, the end-to-end tests through the driver): request
//! `i` is due at `start + i * interval`, and a dedicated thread hands `(i, due time)` to the
//! senders at that time, round robin, whatever they are doing. A sender that falls behind is
//! charged for it, because latencies are measured from the due time (coordinated omission is
//! corrected), and a stalled system shows up as latency and failures, not as a lower rate.
//!
//! The thread sleeps until `spin` before each due time and spins the rest: the async runtime's
//! timer has millisecond granularity and an OS sleep overshoots by tens of microseconds, which a
//! benchmark would charge to every request. The chaos suite passes no spin (its SLOs are in
//! milliseconds, and a spinning thread would take a core from the mesh under test).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

/// When requests are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// When request 0 is due.
    pub start: Instant,
    /// Time between due times (1 / rate).
    pub interval: Duration,
    /// No request is due at or after this; `None` runs until stopped.
    pub end: Option<Instant>,
    /// How long before each due time the dispatcher stops sleeping and spins.
    pub spin: Duration,
}

/// One request that is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Its position in the schedule (0, 1, 2, ...).
    pub id: u64,
    /// When it was due: latency is measured from here.
    pub at: Instant,
}

impl Schedule {
    /// Due times every `1 / rate` seconds from `start`, with no end and no spinning.
    pub fn at_rate(start: Instant, rate: f64) -> Self {
        Self {
            start,
            interval: Duration::from_secs_f64(1.0 / rate),
            end: None,
            spin: Duration::ZERO,
        }
    }

    /// When request `id` is due, or `None` past the end.
    pub fn due(&self, id: u64) -> Option<Instant> {
        let offset = self.interval.checked_mul(u32::try_from(id).ok()?)?;
        let at = self.start.checked_add(offset)?;
        self.end.is_none_or(|end| at < end).then_some(at)
    }
}

/// Hands each due request to `workers` in turn at its due time, until the schedule ends, `stop`
/// is set, or every worker is gone; returns the due times handed out. Blocks: run it on its own
/// thread.
pub fn dispatch(
    schedule: &Schedule,
    workers: Vec<UnboundedSender<Due>>,
    stop: &AtomicBool,
) -> Vec<Instant> {
    let mut sent = Vec::new();
    if workers.is_empty() {
        return sent;
    }
    let mut id: u64 = 0;
    while let Some(at) = schedule.due(id) {
        sleep_until(at, schedule.spin, stop);
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let worker = &workers[(id % workers.len() as u64) as usize];
        if worker.send(Due { id, at }).is_ok() {
            sent.push(at);
        } else if workers.iter().all(UnboundedSender::is_closed) {
            break;
        }
        id += 1;
    }
    sent
}

/// The longest single sleep, so a stop request is noticed promptly at low rates.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Sleeps until `until - spin` (waking to check `stop`), then spins until `until`.
fn sleep_until(until: Instant, spin: Duration, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= until || stop.load(Ordering::Relaxed) {
            return;
        }
        let left = until - now;
        if left > spin {
            std::thread::sleep((left - spin).min(STOP_CHECK));
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_follow_the_schedule_round_robin_whatever_the_workers_do() {
        let (a_tx, mut a_rx) = tokio::sync::mpsc::unbounded_channel();
        let (b_tx, mut b_rx) = tokio::sync::mpsc::unbounded_channel();
        let start = Instant::now();
        let interval = Duration::from_millis(2);
        let schedule = Schedule {
            start,
            interval,
            end: Some(start + Duration::from_millis(20)),
            spin: Duration::from_micros(100),
        };
        let sent = dispatch(&schedule, vec![a_tx, b_tx], &AtomicBool::new(false));
        assert_eq!(sent.len(), 10);
        assert!(
            Instant::now() >= start + interval * 9,
            "sent no earlier than intended"
        );
        let drain = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Due>| {
            std::iter::from_fn(|| rx.try_recv().ok()).collect::<Vec<_>>()
        };
        let (a, b) = (drain(&mut a_rx), drain(&mut b_rx));
        assert_eq!((a.len(), b.len()), (5, 5));
        assert_eq!(
            a[1].at - a[0].at,
            interval * 2,
            "every other time to each worker"
        );
        assert_eq!(b[0].at - a[0].at, interval);
        assert_eq!((a[1].id, b[0].id), (2, 1));
    }

    #[test]
    fn stops_when_every_worker_is_gone_or_when_asked() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        drop(rx);
        let start = Instant::now();
        let schedule = Schedule {
            end: Some(start + Duration::from_secs(60)),
            ..Schedule::at_rate(start, 100_000.0)
        };
        assert!(dispatch(&schedule, vec![tx], &AtomicBool::new(false)).is_empty());
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        assert!(
            dispatch(
                &Schedule::at_rate(start, 1.0),
                vec![tx],
                &AtomicBool::new(true)
            )
            .is_empty()
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
