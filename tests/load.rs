//! Load and soak, run by hand (never by the test command): the figures go in
//! docs/benchmarks.md.
//!
//! ```sh
//! cargo test -p sm-ssh --test load -- --ignored --nocapture fifty
//! SM_SSH_SOAK_SECONDS=1800 cargo test -p sm-ssh --test load -- --ignored --nocapture soak
//! ```
//!
//! `fifty…`: 50 OpenSSH clients at once, each through its own `sm-ssh proxy`
//! process (run under GNU time for its peak RSS and CPU) against one fake,
//! each sending 1 MiB up while receiving 1 MiB down; all bytes checked.
//! `soak`: interactive sessions echoing a line every 100 ms across the fake's
//! `1000 Bye` every 60 s, with credentials from a `credential_process` that
//! expire every `SM_SSH_SOAK_CREDENTIAL_SECONDS` (300), sampling each proxy's
//! RSS and open descriptors and counting the credentials minted.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::credentials::{expiring_profile, use_expiring_profile};
use common::pseudo_random;
use common::ssh::{hex_sha256, quoted, SshWorld};
use common::{seed_with, Env};
use sm_ssh_integration::world::Faults;

const INSTANCE: &str = "mi-0000000000000load";
const JOB: &str = "load-job";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `ssh` whose ProxyCommand runs `sm-ssh proxy` under GNU time, writing
/// "peak-RSS-KiB user-s system-s elapsed-s" to `report` (ssh takes the first
/// ProxyCommand given, so this one wins over SshWorld's; `%%` is ssh's escape).
fn timed_ssh(report: &Path) -> Command {
    let mut ssh = Command::new("ssh");
    // ssh ends its ProxyCommand with SIGHUP, which would stop time before it
    // reports: ignored here, sm-ssh ends on its stdin's EOF instead.
    ssh.arg("-o").arg(format!(
        "ProxyCommand=sh -c 'trap \"\" HUP; exec \"$0\" \"$@\"' /usr/bin/time -f '%%M %%U %%S %%e' -o {} {} proxy --user %r %h",
        report.display(),
        env!("CARGO_BIN_EXE_sm-ssh")
    ));
    ssh
}

fn summary(name: &str, mut values: Vec<f64>) -> String {
    values.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!(
        "{name}: min {:.2} median {:.2} p90 {:.2} max {:.2}",
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0)
    )
}

#[test]
#[ignore = "load harness, run by hand (docs/benchmarks.md)"]
fn fifty_concurrent_ssh_sessions_move_1_mib_each_way() {
    let sessions = env_number("SM_SSH_LOAD_SESSIONS", 50) as usize;
    let world = SshWorld::start(Env::start(seed_with(vec![])), INSTANCE, JOB);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let runs: Vec<_> = (0..sessions)
        .map(|n| {
            let up = pseudo_random(1 << 20, 0x10ad_0000 + n as u64);
            let down = pseudo_random(1 << 20, 0xd0e0_0000 + n as u64);
            let up_remote = dir.path().join(format!("up-{n}"));
            let down_remote = dir.path().join(format!("down-{n}"));
            std::fs::write(&down_remote, &down).unwrap();
            let local = dir.path().join(format!("local-{n}"));
            std::fs::write(&local, &up).unwrap();
            let report = dir.path().join(format!("time-{n}"));
            // Both directions at once: the download runs while the upload arrives.
            let command = format!(
                "cat {} & cat > {}; wait",
                quoted(&down_remote),
                quoted(&up_remote)
            );
            let child = world
                .ssh_via(timed_ssh(&report), &command)
                .stdin(File::open(&local).unwrap())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("ssh runs");
            (n, child, up, down, up_remote, report)
        })
        .collect();
    let mut failures = Vec::new();
    let (mut rss, mut cpu, mut elapsed) = (Vec::new(), Vec::new(), Vec::new());
    for (n, child, up, down, up_remote, report) in runs {
        let output = child.wait_with_output().expect("ssh ends");
        let stored = std::fs::read(&up_remote).unwrap_or_default();
        if !output.status.success()
            || output.stdout != down
            || hex_sha256(&stored) != hex_sha256(&up)
        {
            failures.push(format!(
                "session {n}: {} (down {} bytes, up {} bytes)\n{}",
                output.status,
                output.stdout.len(),
                stored.len(),
                String::from_utf8_lossy(&output.stderr)
            ));
            continue;
        }
        // The proxy finishes (and time reports) a little after ssh exits.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut times = String::new();
        while times.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            times = std::fs::read_to_string(&report).unwrap_or_default();
        }
        let fields: Vec<f64> = times
            .lines()
            .last()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        match fields[..] {
            [kib, user, system, wall] => {
                rss.push(kib / 1024.0);
                cpu.push(user + system);
                elapsed.push(wall);
            }
            _ => failures.push(format!("session {n}: no figures from time: {times:?}")),
        }
    }
    let wall = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {sessions} sessions failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{sessions} sessions, 1 MiB each way each, all byte-identical, {wall:.1?} in all");
    println!("per sm-ssh proxy process:");
    println!("  {}", summary("peak RSS (MiB)", rss));
    println!("  {}", summary("CPU user+system (s)", cpu));
    println!("  {}", summary("elapsed (s)", elapsed));
}

/// (VmRSS in KiB, open descriptors) of `pid`.
fn sample(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// The `sm-ssh proxy` that ssh `pid` started as its ProxyCommand.
fn proxy_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .find(|child: &u32| {
            std::fs::read_to_string(format!("/proc/{child}/cmdline"))
                .is_ok_and(|cmd| cmd.contains("proxy"))
        })
}

#[test]
#[ignore = "soak harness, run by hand (docs/benchmarks.md)"]
fn soak() {
    let seconds = env_number("SM_SSH_SOAK_SECONDS", 600);
    let sessions = env_number("SM_SSH_SOAK_SESSIONS", 4) as usize;
    let lifetime = env_number("SM_SSH_SOAK_CREDENTIAL_SECONDS", 300);
    let mut seed = seed_with(vec![]);
    // The hourly `1000 Bye`, every minute.
    seed.faults = Faults {
        cut_every_ms: Some(60_000),
        ..Faults::default()
    };
    let world = SshWorld::start(Env::start(seed), INSTANCE, JOB);
    expiring_profile(&world.env, lifetime);
    let mut children: Vec<_> = (0..sessions)
        .map(|_| {
            let mut ssh = world.ssh("cat");
            use_expiring_profile(&world.env, &mut ssh);
            ssh.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("ssh runs")
        })
        .collect();
    let mut lines: Vec<_> = children
        .iter_mut()
        .map(|c| {
            (
                c.stdin.take().unwrap(),
                BufReader::new(c.stdout.take().unwrap()),
            )
        })
        .collect();
    let started = Instant::now();
    let mut next_sample = started;
    let mut echoed = 0u64;
    println!("elapsed_s session rss_kib fds echoed_lines resumes credentials_minted");
    while started.elapsed() < Duration::from_secs(seconds) {
        for (n, (stdin, stdout)) in lines.iter_mut().enumerate() {
            let line = format!("session {n} line {echoed} {}\n", "x".repeat(64));
            stdin
                .write_all(line.as_bytes())
                .expect("the session takes input");
            let mut back = String::new();
            stdout.read_line(&mut back).expect("the session echoes");
            assert_eq!(back, line, "session {n} echoed something else");
        }
        echoed += 1;
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(30);
            for (n, child) in children.iter().enumerate() {
                let proxy = proxy_of(child.id()).and_then(sample);
                if let Some((rss, fds)) = proxy {
                    println!(
                        "{:.0} {n} {rss} {fds} {echoed} {} {}",
                        started.elapsed().as_secs_f64(),
                        world.resumes(),
                        minted(&world)
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(lines);
    for mut child in children {
        assert!(child.wait().unwrap().success(), "an ssh session failed");
    }
    println!(
        "{echoed} lines echoed per session, {} resumes, {} credentials minted",
        world.resumes(),
        minted(&world)
    );
    assert!(
        seconds < 2 * lifetime || minted(&world) >= 2,
        "the credentials were never refreshed"
    );
}

/// How many credentials the fake has minted (the first and each refresh).
fn minted(world: &SshWorld) -> usize {
    let fake = world.env.fake.world();
    let world = fake.lock().unwrap();
    world
        .credentials
        .values()
        .filter(|c| c.expires.is_some())
        .count()
}
