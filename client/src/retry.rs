//! [`RetryPolicy`]: how [`Client::submit`](crate::Client::submit) retries a publish that a
//! full stream refused, when asked to (off by default). Pure: the delays are computed here
//! and slept by the client.

use std::time::Duration;

/// Exponential back-off for publishes refused with
/// [`ClientError::StreamFull`](crate::ClientError::StreamFull): wait `initial`, then twice
/// as long each time up to `max_delay`, and give up (returning the last `StreamFull`) once
/// the next wait would end after `max_elapsed` from the first refusal. Re-publishing under
/// the same `Nats-Msg-Id` is safe: JetStream de-duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_delay: Duration,
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 50 ms doubling up to 2 s, for at most 30 s.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (0 for the first), or `None` when a retry
    /// after `elapsed` (time since the first refusal) plus that pause would pass
    /// `max_elapsed`.
    pub fn delay(&self, retry: u32, elapsed: Duration) -> Option<Duration> {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        let pause = self
            .initial
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        (elapsed + pause <= self.max_elapsed).then_some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_stop_at_the_budget() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            max_elapsed: Duration::from_secs(2),
        };
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(p.delay(0, Duration::ZERO), ms(100));
        assert_eq!(p.delay(1, Duration::ZERO), ms(200));
        assert_eq!(p.delay(2, Duration::ZERO), ms(400));
        assert_eq!(p.delay(3, Duration::ZERO), ms(500));
        assert_eq!(p.delay(40, Duration::ZERO), ms(500), "no overflow");
        assert_eq!(p.delay(3, Duration::from_millis(1500)), ms(500));
        assert_eq!(p.delay(3, Duration::from_millis(1501)), None);
    }
}
