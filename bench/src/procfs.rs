//! The cost of a running child process, read from /proc while it is alive.

use std::sync::OnceLock;

/// Peak resident set size (VmHWM) in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// User plus system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    // utime and stime are fields 14 and 15 of the line.
    stat_seconds(pid, 14)
}

/// User plus system CPU seconds of the process's children it has waited for.
pub fn children_cpu_seconds(pid: u32) -> Option<f64> {
    // cutime and cstime are fields 16 and 17 of the line.
    stat_seconds(pid, 16)
}

/// The sum of the two clock-tick fields of /proc/<pid>/stat from `field` (1-based).
fn stat_seconds(pid: u32, field: usize) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |f: usize| fields.get(f - 3)?.parse::<f64>().ok();
    Some((at(field)? + at(field + 1)?) / clock_ticks())
}

/// The machine's busy, stolen and total CPU time, from the first line of /proc/stat.
pub struct MachineTime {
    busy: u64,
    /// Time the hypervisor gave to other guests while this one wanted to run.
    steal: u64,
    total: u64,
}

impl MachineTime {
    pub fn now() -> Option<MachineTime> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
        let total: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3)? + ticks.get(4)?;
        Some(MachineTime {
            busy: total - idle,
            steal: *ticks.get(7)?,
            total,
        })
    }

    /// The busy and the stolen share (0 to 1) of all cores since `start`
    /// (busy includes stolen).
    pub fn busy_since(start: Option<MachineTime>) -> Option<(f64, f64)> {
        let (start, end) = (start?, MachineTime::now()?);
        let total = end.total.checked_sub(start.total).filter(|&t| t > 0)? as f64;
        Some((
            end.busy.saturating_sub(start.busy) as f64 / total,
            end.steal.saturating_sub(start.steal) as f64 / total,
        ))
    }
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(peak_rss_mib(pid).unwrap() > 0.0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(peak_rss_mib(u32::MAX).is_none());
    }
}
