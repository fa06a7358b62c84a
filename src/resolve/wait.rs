//! `--wait`: resolve again until the instance is Online, with a spinner on
//! stderr when stderr is a terminal (never on stdout, which may be the tunnel).

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{sleep, Instant};

use super::{Lookup, ResolveError, Resolved};

/// Between attempts while the instance is registered but not Online: a few
/// cheap calls each.
const OFFLINE_INTERVAL: Duration = Duration::from_secs(2);
/// Between attempts while nothing is registered: each may read every owned
/// instance's tags and run a Logs Insights query.
const MISSING_INTERVAL: Duration = Duration::from_secs(5);
/// How far before the wait began later log searches look, for clock skew
/// and CloudWatch's ingestion delay.
const LOG_MARGIN: Duration = Duration::from_secs(600);
const FRAMES: [char; 4] = ['|', '/', '-', '\\'];

pub(super) async fn until_online(
    lookup: &Lookup<'_>,
    limit: Duration,
) -> Result<Resolved, ResolveError> {
    let started = Instant::now();
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(LOG_MARGIN)
        .as_secs();
    let spinner = std::io::stderr().is_terminal();
    let mut frame = 0;
    let outcome = loop {
        let last = match lookup.once().await {
            Ok(resolved) => break Ok(resolved),
            Err(error @ (ResolveError::NotFound { .. } | ResolveError::Offline { .. })) => error,
            // Waiting long makes a throttled or dropped call likely; retry it.
            Err(ResolveError::Aws(error)) if error.is_transient() => ResolveError::Aws(error),
            Err(error) => break Err(error),
        };
        // Once nothing is registered, a registration can only be logged
        // from now on; an instance found offline keeps the whole window.
        let narrow = matches!(last, ResolveError::NotFound { .. });
        lookup
            .logs_since
            .store(if narrow { since } else { 0 }, Ordering::Relaxed);
        if started.elapsed() >= limit {
            break Err(ResolveError::WaitTimedOut {
                seconds: limit.as_secs(),
                last: Box::new(last),
            });
        }
        let state = match &last {
            ResolveError::Offline {
                instance_id,
                ping_status,
                ..
            } => format!("{instance_id} is {ping_status}"),
            ResolveError::Aws(error) => format!("retrying after {}", error.detail),
            _ => "not registered yet".to_string(),
        };
        tracing::info!(target = %lookup.target, %state, "waiting");
        let interval = match last {
            ResolveError::Offline { .. } => OFFLINE_INTERVAL,
            _ => MISSING_INTERVAL,
        };
        let until = (Instant::now() + interval).min(started + limit);
        while Instant::now() < until {
            if spinner {
                eprint!(
                    "\r\x1b[K{} waiting for {} ({state}) {}s/{}s",
                    FRAMES[frame % FRAMES.len()],
                    lookup.target,
                    started.elapsed().as_secs(),
                    limit.as_secs()
                );
                let _ = std::io::stderr().flush();
                frame += 1;
            }
            sleep(Duration::from_millis(125).min(until.saturating_duration_since(Instant::now())))
                .await;
        }
    };
    if spinner {
        eprint!("\r\x1b[K");
    }
    outcome
}
