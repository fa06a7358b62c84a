//! Retransmission timeout estimation (protocol §5.4), with Karn's rule left to
//! the caller: only messages acknowledged after a single transmission are samples.

use std::time::Duration;

/// SRTT before the first sample.
pub const INITIAL_SRTT: Duration = Duration::from_millis(100);
/// RTO before the first sample.
pub const INITIAL_RTO: Duration = Duration::from_millis(200);
/// The smallest margin added to SRTT.
pub const MIN_MARGIN: Duration = Duration::from_millis(10);
/// The cap both plugin and agent apply.
pub const MAX_RTO: Duration = Duration::from_secs(1);

/// The smoothed round-trip estimator shared by the plugin and the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtoEstimator {
    srtt: Duration,
    rttvar: Duration,
    rto: Duration,
}

impl Default for RtoEstimator {
    fn default() -> Self {
        RtoEstimator {
            srtt: INITIAL_SRTT,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
        }
    }
}

impl RtoEstimator {
    /// Folds one round-trip sample in: RTTVAR from the old SRTT, then SRTT, then RTO.
    pub fn sample(&mut self, rtt: Duration) {
        let deviation = self.srtt.abs_diff(rtt);
        self.rttvar = self.rttvar * 3 / 4 + deviation / 4;
        self.srtt = self.srtt * 7 / 8 + rtt / 8;
        self.rto = (self.srtt + (self.rttvar * 4).max(MIN_MARGIN)).min(MAX_RTO);
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// The smoothed round-trip time.
    pub fn srtt(&self) -> Duration {
        self.srtt
    }

    /// The round-trip variation.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_with_the_protocol_constants() {
        let rto = RtoEstimator::default();
        assert_eq!(
            (rto.srtt(), rto.rttvar(), rto.rto()),
            (ms(100), ms(0), ms(200))
        );
    }

    #[test]
    fn one_sample_follows_the_formula() {
        let mut rto = RtoEstimator::default();
        rto.sample(ms(20));
        // RTTVAR = 0.75·0 + 0.25·|100−20| = 20; SRTT = 0.875·100 + 0.125·20 = 90;
        // RTO = 90 + max(10, 80) = 170.
        assert_eq!(rto.rttvar(), ms(20));
        assert_eq!(rto.srtt(), ms(90));
        assert_eq!(rto.rto(), ms(170));
    }

    #[test]
    fn steady_samples_converge_to_srtt_plus_the_minimum_margin() {
        let mut rto = RtoEstimator::default();
        for _ in 0..200 {
            rto.sample(ms(40));
        }
        assert!(rto.srtt().abs_diff(ms(40)) < ms(1), "{:?}", rto.srtt());
        assert!(rto.rto().abs_diff(ms(50)) < ms(1), "{:?}", rto.rto());
    }

    #[test]
    fn is_capped_at_one_second() {
        let mut rto = RtoEstimator::default();
        for _ in 0..5 {
            rto.sample(ms(5000));
        }
        assert_eq!(rto.rto(), MAX_RTO);
    }
}
