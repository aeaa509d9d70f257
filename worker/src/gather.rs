//! When a forming batch goes, as a decision ([`decide`]) and the loop that gathers jobs
//! by it ([`gather`]), both free of the executor so they are tested on their own.
//!
//! The cut adapts to the load: while the device is idle, a batch goes at once with
//! whatever has arrived (a lone job is not held back waiting for company); while the
//! device is busy, it goes when full, when the device becomes idle, or when the oldest job
//! has waited one batch time of the model (`max_queue_delay_ms` if that is longer; the
//! bound keeps one model from waiting forever behind another's back-to-back full batches)
//! and no other batch is already waiting for the device (it would run first anyway). So
//! batches are small when traffic is light and grow to the maximum under load, where the
//! device's own busy time is the batching window.
//!
//! A model with `linger_ms` above 0 also holds a batch on an *idle* device, until it is full
//! or has waited that long: a little latency at low load for fuller batches, and so less CPU
//! per job, under load (on the H100 host's CPUs, trivial model: a 1 ms linger took the mean
//! batch from 24 to 59 and the services' CPU per job down 13 %; docs/benchmarks.md).

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a forming batch does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Full: it goes.
    Full,
    /// The device is idle: it goes with what it has.
    Idle,
    /// The device is busy and the oldest job has waited the whole window: it goes.
    Aged,
    /// It keeps gathering; `by_age`: until the window ends at the latest (false while
    /// another batch already waits for the device, which would run first anyway).
    Wait { by_age: bool },
}

/// Decides for a batch of `gathered` jobs (at most `max`) while `in_flight` batches are
/// on the device; `aged`: the oldest job has waited the whole window; `lingering`: it has
/// not yet waited the model's linger (an idle device then waits too).
pub(crate) fn decide(
    gathered: usize,
    max: usize,
    in_flight: usize,
    aged: bool,
    lingering: bool,
) -> Decision {
    if gathered >= max {
        Decision::Full
    } else if in_flight == 0 && lingering {
        Decision::Wait { by_age: true }
    } else if in_flight == 0 {
        Decision::Idle
    } else if in_flight >= 2 {
        Decision::Wait { by_age: false }
    } else if aged {
        Decision::Aged
    } else {
        Decision::Wait { by_age: true }
    }
}

/// How long a forming batch may wait for more jobs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// While the device is busy: see [`window`].
    pub busy: Duration,
    /// While it is idle: the model's `linger_ms` (zero: the batch goes at once).
    pub idle: Duration,
}

/// How long a batch may gather while the device is busy: about one batch of the model
/// (`batch_ms`, its recent batch time), and at least `max_queue_delay`.
pub(crate) fn window(batch_ms: Option<f64>, max_queue_delay: Duration) -> Duration {
    let batch = batch_ms.map_or(Duration::ZERO, |ms| Duration::from_secs_f64(ms / 1e3));
    batch.max(max_queue_delay)
}

/// Gathers a batch that starts with `first`: takes jobs from `rx` until [`decide`] says it
/// goes. `device` counts the batches in flight on the model's device (its sender must
/// live as long as the batcher).
pub(crate) async fn gather<T>(
    first: T,
    rx: &mut mpsc::Receiver<T>,
    device: &mut watch::Receiver<usize>,
    max: usize,
    window: Window,
) -> Vec<T> {
    let mut jobs = vec![first];
    let start = Instant::now();
    let (until, linger_until) = (start + window.busy, start + window.idle);
    loop {
        // What has arrived already joins without waiting.
        while jobs.len() < max {
            match rx.try_recv() {
                Ok(p) => jobs.push(p),
                Err(_) => break,
            }
        }
        let in_flight = *device.borrow_and_update();
        let now = Instant::now();
        let decision = decide(jobs.len(), max, in_flight, now >= until, now < linger_until);
        let Decision::Wait { by_age } = decision else {
            return jobs;
        };
        // An idle device waits out the linger; a busy one, the window.
        let deadline = if in_flight == 0 { linger_until } else { until };
        tokio::select! {
            p = rx.recv() => match p {
                Some(p) => jobs.push(p),
                None => return jobs,
            },
            // A batch finished or started: decide again.
            _ = device.changed() => {}
            _ = tokio::time::sleep_until(deadline), if by_age => return jobs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::task::JoinHandle;

    const WINDOW: Duration = Duration::from_millis(10);
    /// No linger: an idle device runs a batch at once.
    const BUSY_ONLY: Window = Window {
        busy: WINDOW,
        idle: Duration::ZERO,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A gather of at most `max` jobs over a channel, with the device's load at `load`.
    struct Rig {
        jobs: mpsc::Sender<u32>,
        load: watch::Sender<usize>,
        batch: JoinHandle<(Vec<u32>, Duration)>,
    }

    /// The window of a model that lingers `idle` on an idle device.
    fn lingering(idle: Duration) -> Window {
        Window { busy: WINDOW, idle }
    }

    fn start(max: usize, load: usize, queued: &[u32]) -> Rig {
        start_with(max, load, queued, BUSY_ONLY)
    }

    fn start_with(max: usize, load: usize, queued: &[u32], window: Window) -> Rig {
        let (jobs, mut rx) = mpsc::channel(64);
        for &j in queued {
            jobs.try_send(j).unwrap();
        }
        let (load, mut device) = watch::channel(load);
        let batch = tokio::spawn(async move {
            let t0 = Instant::now();
            let batch = gather(0, &mut rx, &mut device, max, window).await;
            (batch, t0.elapsed())
        });
        Rig { jobs, load, batch }
    }

    /// Lets the gather run without moving the clock.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn decides_by_fullness_then_device_load_then_age() {
        assert_eq!(decide(8, 8, 1, false, false), Decision::Full);
        assert_eq!(decide(8, 8, 0, false, false), Decision::Full);
        assert_eq!(decide(1, 8, 0, false, false), Decision::Idle);
        assert_eq!(
            decide(3, 8, 1, false, false),
            Decision::Wait { by_age: true }
        );
        assert_eq!(decide(3, 8, 1, true, false), Decision::Aged);
        assert_eq!(
            decide(3, 8, 2, true, false),
            Decision::Wait { by_age: false }
        );
        assert_eq!(
            decide(3, 8, 5, false, false),
            Decision::Wait { by_age: false }
        );
        // Lingering holds a batch on an idle device, never a full one.
        assert_eq!(
            decide(1, 8, 0, false, true),
            Decision::Wait { by_age: true }
        );
        assert_eq!(decide(8, 8, 0, false, true), Decision::Full);
    }

    #[test]
    fn the_window_is_one_batch_time_at_least_the_queue_delay() {
        assert_eq!(window(None, ms(2)), ms(2));
        assert_eq!(window(Some(25.0), ms(2)), ms(25));
        assert_eq!(window(Some(0.5), ms(2)), ms(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_device_takes_what_has_arrived_at_once() {
        let rig = start(8, 0, &[1, 2]);
        let (batch, waited) = rig.batch.await.unwrap();
        assert_eq!(batch, vec![0, 1, 2]);
        assert_eq!(waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_idle_device_waits_for_company_until_the_linger_ends() {
        let rig = start_with(8, 0, &[], lingering(ms(3)));
        tokio::time::sleep(ms(1)).await;
        rig.jobs.send(1).await.unwrap();
        settle().await;
        assert!(
            !rig.batch.is_finished(),
            "idle, but lingering: keep gathering"
        );
        let (batch, waited) = rig.batch.await.unwrap();
        assert_eq!(batch, vec![0, 1]);
        assert_eq!(waited, ms(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_batch_goes_once_full() {
        let rig = start_with(3, 0, &[], lingering(ms(50)));
        for j in 1..=2 {
            tokio::time::sleep(ms(1)).await;
            rig.jobs.send(j).await.unwrap();
        }
        let (batch, waited) = rig.batch.await.unwrap();
        assert_eq!(batch, vec![0, 1, 2]);
        assert_eq!(waited, ms(2));
    }

    #[tokio::test(start_paused = true)]
    async fn what_has_arrived_beyond_a_full_batch_stays_queued() {
        let (jobs, mut rx) = mpsc::channel(8);
        for j in 1..=3 {
            jobs.try_send(j).unwrap();
        }
        let (_load, mut device) = watch::channel(1);
        let batch = gather(0, &mut rx, &mut device, 2, BUSY_ONLY).await;
        assert_eq!(batch, vec![0, 1]);
        assert_eq!(rx.try_recv().unwrap(), 2, "the next batch starts with it");
        assert_eq!(rx.try_recv().unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_device_gathers_until_the_batch_is_full() {
        let rig = start(4, 1, &[]);
        for j in 1..=3 {
            tokio::time::sleep(ms(2)).await;
            rig.jobs.send(j).await.unwrap();
        }
        let (batch, waited) = rig.batch.await.unwrap();
        assert_eq!(batch, vec![0, 1, 2, 3]);
        assert_eq!(waited, ms(6), "full before the window ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_device_that_becomes_idle_takes_the_batch_at_once() {
        let rig = start(8, 1, &[]);
        tokio::time::sleep(ms(3)).await;
        rig.jobs.send(1).await.unwrap();
        tokio::time::sleep(ms(1)).await;
        settle().await;
        assert!(!rig.batch.is_finished());
        rig.load.send_replace(0);
        let (batch, waited) = rig.batch.await.unwrap();
        assert_eq!(batch, vec![0, 1]);
        assert_eq!(waited, ms(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_device_cuts_after_one_window() {
        let rig = start(8, 1, &[]);
        let (batch, waited) = rig.batch.await.unwrap();
        assert_eq!(batch, vec![0]);
        assert_eq!(waited, WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn never_cut_by_age_while_another_batch_waits() {
        let rig = start(8, 2, &[]);
        tokio::time::sleep(WINDOW * 10).await;
        settle().await;
        assert!(
            !rig.batch.is_finished(),
            "a batch waits for the device: keep gathering"
        );
        rig.jobs.send(1).await.unwrap();
        settle().await;
        assert!(!rig.batch.is_finished());
        // The waiting batch starts: this one is overdue and goes at once.
        rig.load.send_replace(1);
        let (batch, waited) = rig.batch.await.unwrap();
        assert_eq!(batch, vec![0, 1]);
        assert_eq!(waited, WINDOW * 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_queue_ends_the_batch() {
        let rig = start(8, 1, &[]);
        drop(rig.jobs);
        let (batch, waited) = rig.batch.await.unwrap();
        assert_eq!(batch, vec![0]);
        assert_eq!(waited, Duration::ZERO);
        drop(rig.load);
    }
}
