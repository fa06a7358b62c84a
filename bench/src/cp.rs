//! `sm-ssh cp` at realistic pacing: one file up and down over 1 to 16
//! sessions (port forwarding, cp's first choice), over 8 SSH sessions
//! (its fallback), against `scp` through one `sm-ssh proxy` session, and
//! under websocket cuts. Wall time counts everything the user waits for (sessions,
//! SSH logins, both SHA-256 passes); CPU is the measured command's and every
//! process it starts, orphans included (see `cpu_of`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use sm_ssh_integration::world::{Faults, Pacing};

use crate::fixture::{self, Fixture};
use crate::measure::{Tools, SM_SSH};
use crate::procfs;
use crate::results::{CpRow, Results};
use crate::tcp::Direction;

pub const SESSIONS: [u16; 5] = [1, 2, 4, 8, 16];
const CUT_EVERY_MS: u64 = 2000;
const CUT_SESSIONS: u16 = 8;
/// Sessions of the copy over AWS-StartSSHSession, beside the same count over port forwarding.
const SIDE_BY_SIDE_SESSIONS: u16 = 8;

/// What the cp part copies, and under which pacing.
pub struct Copies<'a> {
    pub bytes: u64,
    /// When not empty, replaces [`SESSIONS`] and leaves out the side rows.
    pub only: &'a [u16],
    /// `Realistic` but for by-hand looks at another ceiling.
    pub pacing: Pacing,
}

pub async fn cp(fx: &Fixture, tools: &Tools, copies: &Copies<'_>, results: &mut Results) {
    if let Err(e) = cp_all(fx, tools, copies, results).await {
        results.note(SM_SSH, "cp", format!("{e:#}"));
    }
    fx.conditions(Pacing::Realistic, Faults::default());
}

async fn cp_all(
    fx: &Fixture,
    tools: &Tools,
    &Copies {
        bytes,
        only,
        pacing,
    }: &Copies<'_>,
    results: &mut Results,
) -> anyhow::Result<()> {
    let (_sshd, config) = fx.add_openssh_instance(&tools.sm_ssh)?;
    let dir = tempfile::tempdir()?;
    let files = Files {
        local: dir.path().join("local.bin"),
        far: dir.path().join("far.bin"),
        back: dir.path().join("back.bin"),
        host: format!("{}.training.sagemaker", fixture::SSH_JOB),
    };
    write_pattern(&files.local, bytes)?;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let sm = tools.sm_ssh.display().to_string();
    let cp = |n: u16| {
        let head = [&sm, "cp", "--quiet", "--user", &user, "--sessions"].map(str::to_owned);
        head.into_iter().chain([n.to_string()]).collect::<Vec<_>>()
    };
    let scp = ["scp", "-q", "-F", &config.display().to_string()].map(str::to_owned);

    fx.conditions(pacing, Faults::default());
    let counts = if only.is_empty() { &SESSIONS[..] } else { only };
    for &n in counts {
        let scenario = format!("sm-ssh cp --sessions {n}");
        files
            .both_ways(fx, &cp(n), &scenario, n, bytes, results)
            .await?;
    }
    if !only.is_empty() {
        return Ok(());
    }
    // cp takes port forwarding when IAM allows it; the same copy over SSH
    // sessions (the fallback) beside it.
    let mut ssh_sessions = cp(SIDE_BY_SIDE_SESSIONS);
    ssh_sessions.extend(["--document".into(), "AWS-StartSSHSession".into()]);
    let scenario =
        format!("sm-ssh cp --sessions {SIDE_BY_SIDE_SESSIONS} --document AWS-StartSSHSession");
    files
        .both_ways(
            fx,
            &ssh_sessions,
            &scenario,
            SIDE_BY_SIDE_SESSIONS,
            bytes,
            results,
        )
        .await?;
    let scenario = "scp via sm-ssh proxy (1 session)";
    files
        .both_ways(fx, &scp, scenario, 1, bytes, results)
        .await?;
    fx.conditions(
        pacing,
        Faults {
            cut_every_ms: Some(CUT_EVERY_MS),
            ..Faults::default()
        },
    );
    let scenario =
        format!("sm-ssh cp --sessions {CUT_SESSIONS}, websocket cut every {CUT_EVERY_MS} ms");
    files
        .both_ways(
            fx,
            &cp(CUT_SESSIONS),
            &scenario,
            CUT_SESSIONS,
            bytes,
            results,
        )
        .await
}

/// The file, where it goes on the instance, and where it comes back.
struct Files {
    local: PathBuf,
    far: PathBuf,
    back: PathBuf,
    host: String,
}

impl Files {
    /// `command` up (local → far) then down (far → back), each checked
    /// byte for byte, recorded with the websocket cuts that fell inside.
    async fn both_ways(
        &self,
        fx: &Fixture,
        command: &[String],
        scenario: &str,
        sessions: u16,
        bytes: u64,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let far = format!("{}:{}", self.host, self.far.display());
        for direction in [Direction::Upload, Direction::Download] {
            let (from, to, copy) = match direction {
                Direction::Upload => (self.local.display().to_string(), far.clone(), &self.far),
                Direction::Download => (far.clone(), self.back.display().to_string(), &self.back),
            };
            let mut args = command.to_vec();
            args.extend([from, to]);
            let cuts = fx.cuts();
            let busy = procfs::MachineTime::now();
            let figures = measure(fx, &args, bytes)
                .await
                .with_context(|| format!("{scenario} {}", direction.name()))?;
            same(&self.local, copy)?;
            let mut row = CpRow::new(scenario.to_owned(), direction, sessions, bytes, figures);
            row.cuts = Some(fx.cuts() - cuts).filter(|&c| c > 0);
            let shares = procfs::MachineTime::busy_since(busy);
            row.machine_busy = shares.map(|s| s.0);
            row.machine_stolen = shares.map(|s| s.1);
            eprintln!(
                "cp: {scenario} {}: {:.2} MB/s, {:.1} CPU s/GB, machine {:.0}% busy ({:.0}% stolen)",
                direction.name(),
                row.mb_s,
                row.cpu_s_per_gb,
                row.machine_busy.unwrap_or(f64::NAN) * 100.0,
                row.machine_stolen.unwrap_or(f64::NAN) * 100.0
            );
            results.cp.push(row);
        }
        Ok(())
    }
}

/// Runs `args` under `cpu-of`, which reports the CPU of every process they
/// start; returns MB/s and CPU s/GB.
async fn measure(fx: &Fixture, args: &[String], bytes: u64) -> anyhow::Result<(f64, f64)> {
    let mut command = fx.command(std::env::current_exe()?);
    command
        .arg("cpu-of")
        .args(args)
        .stdin(std::process::Stdio::null());
    // By hand: SM_SSH_BENCH_LOG=<file> gives the measured commands' debug log.
    if let Some(log) = std::env::var_os("SM_SSH_BENCH_LOG") {
        command.env("SM_SSH_LOG", log);
    }
    let start = Instant::now();
    let output = command.output().await?;
    let wall = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{}: {}", output.status, crate::runner::tail(&stderr));
    }
    let cpu: f64 = stderr
        .lines()
        .last()
        .and_then(|l| l.strip_prefix(crate::cpu_of::PREFIX))
        .and_then(|s| s.parse().ok())
        .context("cpu-of reported no CPU time")?;
    Ok((bytes as f64 / 1e6 / wall, cpu / (bytes as f64 / 1e9)))
}

fn write_pattern(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut data = Vec::with_capacity(bytes as usize + 8);
    while (data.len() as u64) < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(bytes as usize);
    Ok(std::fs::write(path, data)?)
}

fn same(a: &Path, b: &Path) -> anyhow::Result<()> {
    if std::fs::read(a)? != std::fs::read(b)? {
        bail!("{} and {} differ", a.display(), b.display());
    }
    Ok(())
}
