//! Measured child processes: one-shot commands timed to their first stdout
//! byte or to their exit, and long-running forwarders whose cost is read
//! from /proc.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::procfs;

/// How long any one measured step may take before the run is abandoned.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// One timed run of a command.
pub struct Timed {
    pub wall: Duration,
    /// CPU seconds of the process when the clock stopped.
    pub cpu: Option<f64>,
}

/// Runs `command` with stdin held open and stops the clock at the first byte
/// it writes to stdout, which must begin an SSH banner; then closes stdin and
/// lets it exit.
pub async fn time_to_first_byte(mut command: Command) -> anyhow::Result<Timed> {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command.spawn().context("spawn")?;
    let pid = child.id();
    let stderr = collect(child.stderr.take());
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(STEP_TIMEOUT, stdout.read(&mut first)).await;
    let wall = start.elapsed();
    let cpu = pid.and_then(procfs::cpu_seconds);
    match read {
        Ok(Ok(1)) => {
            // Check that it is the banner, not a message on the wrong stream.
            let mut rest = [0u8; 3];
            let _ = tokio::time::timeout(STEP_TIMEOUT, stdout.read_exact(&mut rest)).await;
            if [first[0], rest[0], rest[1], rest[2]] != *b"SSH-" {
                let _ = child.start_kill();
                bail!(
                    "stdout began with {:?}, not an SSH banner",
                    String::from_utf8_lossy(&[first[0], rest[0], rest[1], rest[2]])
                );
            }
        }
        Ok(Ok(_)) | Ok(Err(_)) => {
            let _ = child.wait().await;
            bail!(
                "no output before exit; stderr: {}",
                stderr.await.unwrap_or_default()
            );
        }
        Err(_) => bail!("no output within {STEP_TIMEOUT:?}"),
    }
    drop(child.stdin.take());
    drop(stdout);
    finish(&mut child).await;
    Ok(Timed { wall, cpu })
}

/// Runs `command` to completion with stdin closed; fails on a non-zero exit.
/// Returns its stdout too.
pub async fn time_to_exit(mut command: Command) -> anyhow::Result<(Timed, String)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let output = tokio::time::timeout(STEP_TIMEOUT, command.output())
        .await
        .context("timed out")??;
    let wall = start.elapsed();
    if !output.status.success() {
        bail!(
            "{}; stderr: {}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr))
        );
    }
    Ok((
        Timed { wall, cpu: None },
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// Gives a child two seconds to exit after its stdin closed, then kills it.
async fn finish(child: &mut Child) {
    if tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

fn collect<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: Option<R>,
) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = String::new();
        if let Some(mut r) = reader {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes).await;
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        tail(&text)
    })
}

/// The telling lines of a diagnostic, kept short for the report: the first
/// error or panic line when there is one, else the last lines.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let telling = lines
        .iter()
        .position(|l| l.contains("panicked") || l.contains("Error") || l.contains("error:"));
    match telling {
        Some(i) => lines[i..lines.len().min(i + 3)].join(" / "),
        None => lines[lines.len().saturating_sub(3)..].join(" / "),
    }
}

/// A long-running forwarder: a local TCP port that reaches the bench target.
pub struct Forwarder {
    child: Child,
    pid: u32,
    pub addr: SocketAddr,
    stderr: JoinHandle<String>,
}

impl Forwarder {
    /// Starts a forwarder that listens on `port` (chosen by the caller) and
    /// waits until that port accepts connections.
    pub async fn on_port(mut command: Command, port: u16) -> anyhow::Result<Forwarder> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("spawn the forwarder")?;
        let pid = child.id().context("pid")?;
        let stderr = collect(child.stderr.take());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the forwarder exited ({status}): {}",
                    stderr.await.unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("the forwarder did not listen on {addr} within {STEP_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Forwarder {
            child,
            pid,
            addr,
            stderr,
        })
    }

    /// Starts a forwarder that announces its port as `listening <port>` on stdout.
    pub async fn announcing(mut command: Command) -> anyhow::Result<Forwarder> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("spawn the forwarder")?;
        let pid = child.id().context("pid")?;
        let stderr = collect(child.stderr.take());
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let line = tokio::time::timeout(STEP_TIMEOUT, lines.next_line()).await;
        let port: u16 = match line {
            Ok(Ok(Some(line))) => line
                .strip_prefix("listening ")
                .and_then(|p| p.trim().parse().ok())
                .with_context(|| format!("unexpected first line {line:?}"))?,
            _ => {
                let _ = child.start_kill();
                bail!(
                    "the forwarder did not start: {}",
                    stderr.await.unwrap_or_default()
                );
            }
        };
        Ok(Forwarder {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stderr,
        })
    }

    pub fn cpu_seconds(&self) -> f64 {
        procfs::cpu_seconds(self.pid).unwrap_or(f64::NAN)
    }

    pub fn peak_rss_mib(&self) -> f64 {
        procfs::peak_rss_mib(self.pid).unwrap_or(f64::NAN)
    }

    /// Fails with the forwarder's diagnostics if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the forwarder exited ({status})");
        }
        Ok(())
    }

    /// Closes stdin and interrupts it (as Ctrl-C would), waits briefly,
    /// kills; returns the tail of its stderr.
    pub async fn stop(mut self) -> String {
        drop(self.child.stdin.take());
        let _ = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status()
            .await;
        finish(&mut self.child).await;
        self.stderr.await.unwrap_or_default()
    }
}
