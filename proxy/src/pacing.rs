//! A token bucket that paces stream messages: a rate, never a fixed sleep.

use std::time::{Duration, Instant};

/// Paces transmissions to `rate` messages per second with a burst allowance.
/// `None` as the rate means unlimited.
#[derive(Clone, Debug)]
pub struct Pacer {
    rate: Option<u32>,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// A full bucket. The burst is a tenth of a second's worth, at least one message.
    pub fn new(rate: Option<u32>, now: Instant) -> Pacer {
        let burst = rate.map_or(0.0, |r| (f64::from(r) / 10.0).max(1.0));
        Pacer {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * f64::from(rate)).min(self.burst);
            self.last = now;
        }
    }

    /// Takes one token if available.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.rate.is_none() {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be available (`now` if one is).
    pub fn next_token(&mut self, now: Instant) -> Instant {
        let Some(rate) = self.rate else { return now };
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            // Round up so that waking at the returned instant always finds a token.
            let missing = (1.0 - self.tokens) / f64::from(rate);
            now + Duration::from_secs_f64(missing) + Duration::from_micros(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_refuses() {
        let now = Instant::now();
        let mut pacer = Pacer::new(None, now);
        assert!((0..100_000).all(|_| pacer.try_take(now)));
        assert_eq!(pacer.next_token(now), now);
    }

    #[test]
    fn allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Some(1000), start);
        let burst = (0..1000).take_while(|_| pacer.try_take(start)).count();
        assert_eq!(burst, 100);
        let next = pacer.next_token(start);
        assert!(next > start && next <= start + Duration::from_micros(1002));
        assert!(pacer.try_take(next));
        // One simulated second later, exactly one second's worth (capped by the burst).
        let later = next + Duration::from_secs(1);
        let allowed = (0..1000).take_while(|_| pacer.try_take(later)).count();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn sustained_rate_matches_the_configuration() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Some(500), start);
        let mut now = start;
        let mut sent = 0;
        while now < start + Duration::from_secs(2) {
            if pacer.try_take(now) {
                sent += 1;
            } else {
                now = pacer.next_token(now);
            }
        }
        // 2 s at 500/s plus the initial burst of 50.
        assert!((1049..=1051).contains(&sent), "{sent}");
    }
}
