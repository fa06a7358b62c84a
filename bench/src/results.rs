//! Everything one harness run measured, saved as JSON beside the report.

use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::stats::Summary;
use crate::tcp::Direction;

/// The realistic agent's ceiling: 1000 messages of 1024 bytes per second.
pub const CEILING_MB_S: f64 = 1000.0 * 1024.0 / 1e6;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub machine: Option<Machine>,
    pub command: String,
    /// UTC, `date -u` style.
    pub date: String,
    pub wall_seconds: f64,
    #[serde(default)]
    pub network: Vec<NetworkRow>,
    pub setup: Vec<SetupRow>,
    pub throughput: Vec<ThroughputRow>,
    pub loss: Vec<LossRow>,
    pub parallel: Vec<ParallelRow>,
    pub cost: Vec<CostRow>,
    pub reconnect: Vec<ReconnectRow>,
    #[serde(default)]
    pub cp: Vec<CpRow>,
    pub unmeasured: Vec<Unmeasured>,
}

/// Process start to first banner byte (or to `ssh … true` exit), over the
/// harness's network (TLS endpoints behind delaying relays).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupRow {
    pub tool: String,
    pub scenario: String,
    /// The relays' round-trip time.
    pub rtt_ms: u64,
    /// `cold`: a new process with an empty cache directory; `warm`: the same
    /// command again with the cache the cold run left.
    pub cache: Cache,
    pub wall_ms: Summary,
    /// CPU time of the measured process itself, when it could be read.
    pub cpu_ms: Option<Summary>,
    /// API calls the fake answered during one run.
    pub api_calls: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    Cold,
    Warm,
}

impl Cache {
    pub fn name(self) -> &'static str {
        match self {
            Cache::Cold => "cold",
            Cache::Warm => "warm",
        }
    }
}

/// The network's own check at one RTT: what a connect, an exchange, a TLS
/// handshake and an HTTPS request cost through the relays.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRow {
    pub rtt_ms: u64,
    pub step: String,
    /// Round trips the step takes on a real network.
    pub expected_rtts: u32,
    pub wall_ms: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputRow {
    pub tool: String,
    pub pacing: String,
    pub direction: Direction,
    pub bytes: u64,
    pub mb_s: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LossRow {
    pub tool: String,
    pub direction: Direction,
    /// Per-direction frame drop probability, in percent.
    pub loss_pct: f64,
    pub mb_s: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParallelRow {
    pub tool: String,
    pub sessions: usize,
    pub connections: usize,
    pub mb_s: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostRow {
    pub tool: String,
    pub scenario: String,
    pub peak_rss_mib: Summary,
    pub cpu_s_per_gb: Summary,
    /// CPU seconds per wall second while moving data.
    pub core_fraction: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconnectRow {
    pub tool: String,
    pub cut_every_ms: u64,
    /// Cuts that fell inside the transfers.
    pub cuts: usize,
    /// The longest pauses in delivery, one per cut: an upper bound on the
    /// time from a cut to the first byte delivered again.
    pub stall_ms: Summary,
    /// Bytes expected minus bytes delivered intact, over all runs.
    pub bytes_lost: u64,
    pub bytes_moved: u64,
}

/// One file copy (`sm-ssh cp`, or `scp` through `sm-ssh proxy`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpRow {
    pub scenario: String,
    pub direction: Direction,
    pub sessions: u16,
    pub bytes: u64,
    /// Bytes over the whole command's wall time.
    pub mb_s: f64,
    /// CPU seconds (the command and its children) per GB copied.
    pub cpu_s_per_gb: f64,
    /// Websocket cuts during the copy, when the fake was cutting.
    pub cuts: Option<u64>,
    /// The share of every core's time that was not idle during the copy
    /// (the whole machine: cp, the fake, sshd and the far side's commands).
    #[serde(default)]
    pub machine_busy: Option<f64>,
    /// The share of it stolen by the hypervisor for other guests: a run with
    /// much of it was slowed by the host, not by what it measures.
    #[serde(default)]
    pub machine_stolen: Option<f64>,
}

impl CpRow {
    pub fn new(
        scenario: String,
        direction: Direction,
        sessions: u16,
        bytes: u64,
        (mb_s, cpu_s_per_gb): (f64, f64),
    ) -> CpRow {
        CpRow {
            scenario,
            direction,
            sessions,
            bytes,
            mb_s,
            cpu_s_per_gb,
            cuts: None,
            machine_busy: None,
            machine_stolen: None,
        }
    }

    /// MB/s over the sessions' combined ceiling.
    pub fn of_ceiling(&self) -> f64 {
        self.mb_s / (f64::from(self.sessions) * CEILING_MB_S)
    }
}

/// A figure a tool could not give, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unmeasured {
    pub tool: String,
    pub what: String,
    pub why: String,
}

impl Results {
    pub fn note(&mut self, tool: &str, what: &str, why: impl Into<String>) {
        let why = why.into();
        eprintln!("sm-ssh-bench: not measured: {tool}: {what}: {why}");
        self.unmeasured.push(Unmeasured {
            tool: tool.into(),
            what: what.into(),
            why,
        });
    }
}
