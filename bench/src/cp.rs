//! `sm-ssh cp` at realistic pacing: one file up and down over 1 to 16
//! sessions, against `scp` through one `sm-ssh proxy` session, and under
//! websocket cuts. Wall time counts everything the user waits for (sessions,
//! SSH logins, both SHA-256 passes); CPU is the measured command's and its
//! children's (`times` in the shell that runs it).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use sm_ssh_integration::world::{Faults, Pacing};

use crate::fixture::{self, Fixture};
use crate::measure::{Tools, SM_SSH};
use crate::results::{CpRow, Results};
use crate::tcp::Direction;

pub const SESSIONS: [u16; 5] = [1, 2, 4, 8, 16];
const CUT_EVERY_MS: u64 = 2000;
const CUT_SESSIONS: u16 = 8;

pub async fn cp(fx: &Fixture, tools: &Tools, bytes: u64, results: &mut Results) {
    if let Err(e) = cp_all(fx, tools, bytes, results).await {
        results.note(SM_SSH, "cp", format!("{e:#}"));
    }
    fx.conditions(Pacing::Realistic, Faults::default());
}

async fn cp_all(
    fx: &Fixture,
    tools: &Tools,
    bytes: u64,
    results: &mut Results,
) -> anyhow::Result<()> {
    let (_sshd, config) = fx.add_openssh_instance(&tools.sm_ssh)?;
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("local.bin");
    let far = dir.path().join("far.bin");
    let back = dir.path().join("back.bin");
    write_pattern(&local, bytes)?;
    let host = format!("{}.training.sagemaker", fixture::SSH_JOB);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let remote = |path: &Path| format!("{host}:{}", path.display());
    let sm = tools.sm_ssh.display().to_string();
    let cp_args = |n: u16, from: String, to: String| -> Vec<String> {
        [
            sm.as_str(),
            "cp",
            "--quiet",
            "--user",
            &user,
            "--sessions",
            &n.to_string(),
            &from,
            &to,
        ]
        .map(str::to_owned)
        .to_vec()
    };

    fx.conditions(Pacing::Realistic, Faults::default());
    for n in SESSIONS {
        for direction in [Direction::Upload, Direction::Download] {
            let args = match direction {
                Direction::Upload => cp_args(n, local.display().to_string(), remote(&far)),
                Direction::Download => cp_args(n, remote(&far), back.display().to_string()),
            };
            let row = measure(fx, &args, bytes)
                .await
                .with_context(|| format!("cp --sessions {n}"))?;
            same(
                &local,
                if direction == Direction::Upload {
                    &far
                } else {
                    &back
                },
            )?;
            eprintln!("cp: {n} sessions {}: {:.2} MB/s", direction.name(), row.0);
            results.cp.push(CpRow::new(
                format!("sm-ssh cp --sessions {n}"),
                direction,
                n,
                bytes,
                row,
            ));
        }
    }

    for direction in [Direction::Upload, Direction::Download] {
        let (from, to) = match direction {
            Direction::Upload => (
                local.display().to_string(),
                format!("{host}:{}", far.display()),
            ),
            Direction::Download => (
                format!("{host}:{}", far.display()),
                back.display().to_string(),
            ),
        };
        let args: Vec<String> = ["scp", "-q", "-F", &config.display().to_string(), &from, &to]
            .map(str::to_owned)
            .to_vec();
        let row = measure(fx, &args, bytes)
            .await
            .context("scp through sm-ssh proxy")?;
        same(
            &local,
            if direction == Direction::Upload {
                &far
            } else {
                &back
            },
        )?;
        eprintln!("cp: scp {}: {:.2} MB/s", direction.name(), row.0);
        results.cp.push(CpRow::new(
            "scp via sm-ssh proxy (1 session)".into(),
            direction,
            1,
            bytes,
            row,
        ));
    }

    fx.conditions(
        Pacing::Realistic,
        Faults {
            cut_every_ms: Some(CUT_EVERY_MS),
            ..Faults::default()
        },
    );
    for direction in [Direction::Upload, Direction::Download] {
        let args = match direction {
            Direction::Upload => cp_args(CUT_SESSIONS, local.display().to_string(), remote(&far)),
            Direction::Download => cp_args(CUT_SESSIONS, remote(&far), back.display().to_string()),
        };
        let cuts = fx.cuts();
        let row = measure(fx, &args, bytes)
            .await
            .context("cp under websocket cuts")?;
        same(
            &local,
            if direction == Direction::Upload {
                &far
            } else {
                &back
            },
        )?;
        let mut row = CpRow::new(
            format!("sm-ssh cp --sessions {CUT_SESSIONS}, websocket cut every {CUT_EVERY_MS} ms"),
            direction,
            CUT_SESSIONS,
            bytes,
            row,
        );
        row.cuts = Some(fx.cuts() - cuts);
        eprintln!(
            "cp: cuts {}: {:.2} MB/s, {:?} cuts",
            direction.name(),
            row.mb_s,
            row.cuts
        );
        results.cp.push(row);
    }
    Ok(())
}

/// Runs `args` in a shell that reports its children's CPU; returns MB/s and CPU s/GB.
async fn measure(fx: &Fixture, args: &[String], bytes: u64) -> anyhow::Result<(f64, f64)> {
    let mut command = fx.command("sh");
    command
        .args(["-c", "\"$@\"; s=$?; times >&2; exit $s", "sh"])
        .args(args)
        .stdin(std::process::Stdio::null());
    let start = Instant::now();
    let output = command.output().await?;
    let wall = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{}: {}", output.status, crate::runner::tail(&stderr));
    }
    // `times`' last line: the children's user and system time, e.g. `0m1.20s 0m0.31s`.
    let cpu: f64 = stderr
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(minutes_seconds)
        .sum();
    Ok((bytes as f64 / 1e6 / wall, cpu / (bytes as f64 / 1e9)))
}

fn minutes_seconds(text: &str) -> Option<f64> {
    let (m, s) = text.strip_suffix('s')?.split_once('m')?;
    Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
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
