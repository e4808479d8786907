//! The open-loop schedule: a dedicated thread hands each request's intended send time to the
//! connection workers, round robin, at that time. It sleeps until shortly before each time and
//! spins the rest, because the async runtime's timer has millisecond granularity and an OS
//! sleep overshoots by tens of microseconds: both would be charged to every request.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

/// Sends intended times `start`, `start + interval`, ... before `end` to `workers` in turn;
/// returns the times sent. Stops early when every worker is gone.
pub(super) fn dispatch(
    start: Instant,
    end: Instant,
    interval: Duration,
    spin: Duration,
    workers: Vec<UnboundedSender<Instant>>,
) -> Vec<Instant> {
    let mut sent = Vec::new();
    if workers.is_empty() {
        return sent;
    }
    let mut i: u32 = 0;
    while let Some(intended) = interval
        .checked_mul(i)
        .and_then(|offset| start.checked_add(offset))
        .filter(|t| *t < end)
    {
        sleep_until(intended, spin);
        let worker = &workers[i as usize % workers.len()];
        if worker.send(intended).is_ok() {
            sent.push(intended);
        } else if workers.iter().all(UnboundedSender::is_closed) {
            break;
        }
        i = match i.checked_add(1) {
            Some(next) => next,
            None => break,
        };
    }
    sent
}

/// Sleeps until `until - spin`, then spins until `until`.
pub(super) fn sleep_until(until: Instant, spin: Duration) {
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        let left = until - now;
        if left > spin {
            std::thread::sleep(left - spin);
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
        let sent = dispatch(
            start,
            start + Duration::from_millis(20),
            interval,
            Duration::from_micros(100),
            vec![a_tx, b_tx],
        );
        assert_eq!(sent.len(), 10);
        assert!(
            Instant::now() >= start + interval * 9,
            "sent no earlier than intended"
        );
        let mut a = Vec::new();
        while let Ok(t) = a_rx.try_recv() {
            a.push(t);
        }
        let mut b = Vec::new();
        while let Ok(t) = b_rx.try_recv() {
            b.push(t);
        }
        assert_eq!(a.len(), 5);
        assert_eq!(b.len(), 5);
        assert_eq!(a[1] - a[0], interval * 2, "every other time to each worker");
        assert_eq!(b[0] - a[0], interval);
    }

    #[test]
    fn stops_when_every_worker_is_gone() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        drop(rx);
        let start = Instant::now();
        let sent = dispatch(
            start,
            start + Duration::from_secs(60),
            Duration::from_micros(10),
            Duration::ZERO,
            vec![tx],
        );
        assert!(sent.is_empty());
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
