//! How fast the fake moves messages: the agent's read-and-pause pump and the
//! service's per-direction message-rate ceiling.

use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::world::Pacing;

/// The agent reads at most this much from a target per message.
pub(crate) const READ_CHUNK: usize = 1024;

/// The ceiling `Pacing::Realistic` applies, in messages per second per direction.
const REALISTIC_CEILING: u32 = 1000;

/// After an idle spell, this many messages may go out back to back before the
/// ceiling spaces them again.
const BURST: u32 = 8;

/// The pause the agent's pump takes after each read (`time.Sleep(1ms)` in the agent).
pub(crate) fn pump_pause(pacing: Pacing) -> Option<Duration> {
    match pacing {
        Pacing::Unconstrained => None,
        Pacing::Realistic | Pacing::Ceiling { .. } => Some(Duration::from_millis(1)),
    }
}

/// The message-rate ceiling for one direction, if any.
pub(crate) fn ceiling(pacing: Pacing) -> Option<RateLimiter> {
    let per_second = match pacing {
        Pacing::Unconstrained => return None,
        Pacing::Realistic => REALISTIC_CEILING,
        Pacing::Ceiling {
            messages_per_second,
        } => messages_per_second.max(1),
    };
    Some(RateLimiter::new(per_second))
}

/// Spaces messages at `1 / rate`, allowing a short burst after idleness.
pub(crate) struct RateLimiter {
    interval: Duration,
    next: Instant,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u32) -> RateLimiter {
        RateLimiter::every(Duration::from_secs(1) / per_second.max(1))
    }

    /// One message per `interval`. The agent pump's 1 ms pause is kept this
    /// way, on a schedule: a plain 1 ms tokio sleep lasts until the timer's
    /// next tick, about 2 ms, where Go's `time.Sleep` lasts barely over 1 ms.
    pub(crate) fn every(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            next: Instant::now(),
        }
    }

    /// Waits until the next message may go.
    pub(crate) async fn wait(&mut self) {
        let now = Instant::now();
        let earliest = now.checked_sub(self.interval * BURST).unwrap_or(now);
        let slot = self.next.max(earliest);
        if slot > now {
            sleep_until(slot).await;
        }
        self.next = slot + self.interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconstrained_has_no_ceiling_and_no_pause() {
        assert!(ceiling(Pacing::Unconstrained).is_none());
        assert!(pump_pause(Pacing::Unconstrained).is_none());
        assert_eq!(
            pump_pause(Pacing::Ceiling {
                messages_per_second: 10
            }),
            Some(Duration::from_millis(1))
        );
    }
}
