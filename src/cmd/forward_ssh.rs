//! `sm-ssh forward` to a Studio space: the space's channel carries one SSH
//! connection, so the forwards ride on SSH's own (`ssh -N -L …` through
//! `sm-ssh proxy`, as `connect` runs it). `forward` owns that ssh: when it is
//! told to stop (SIGTERM, SIGINT, SIGHUP) it stops ssh at once and waits
//! for it, so no ssh keeps the ports open after `forward` is gone.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use rustix::process::{kill_process, Pid, Signal};
use tokio::signal::unix::{signal, SignalKind};

use super::connect::{spawn_ssh, SshPlan};
use super::forward::Spec;
use crate::cli::Global;
use crate::path::Reach;
use crate::sshconfig::Paths;

pub async fn run(reach: &Reach, forwards: &[Spec], global: &Global) -> anyhow::Result<ExitCode> {
    let mut ssh_args = vec![
        "-N".to_string(),
        "-o".into(),
        "ExitOnForwardFailure=yes".into(),
    ];
    for spec in forwards {
        ssh_args.extend(["-L".to_string(), local_forward(spec)]);
        eprintln!("forwarding {spec} on {} over ssh", reach.name);
    }
    eprintln!("sm-ssh: press Ctrl-C to stop");
    let paths = Paths::current()?;
    let plan = SshPlan {
        paths: &paths,
        global,
        label: &reach.name,
        session_target: &reach.session_target,
        host_key_alias: &reach.pin.alias,
        user: reach.default_user,
        port: 22,
        ssh_args: &ssh_args,
    };
    run_until_stopped(plan.argv()).await
}

/// How long ssh may take to clean up after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// Runs ssh until it ends (its status is ours) or a signal tells us to stop.
async fn run_until_stopped(argv: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut child = spawn_ssh(argv, true)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let stopped_by = tokio::select! {
        status = child.wait() => {
            let code = status.context("waiting for ssh")?.code().unwrap_or(255);
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)));
        }
        _ = term.recv() => ("SIGTERM", 15),
        _ = hangup.recv() => ("SIGHUP", 1),
        _ = interrupt.recv() => ("SIGINT", 2),
    };
    let (name, number) = stopped_by;
    // SIGTERM lets ssh end its ProxyCommand and close its listeners itself.
    if let Some(pid) = child.id().and_then(|id| Pid::from_raw(id as i32)) {
        let _ = kill_process(pid, Signal::TERM);
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
    eprintln!("sm-ssh: {name}: forwarding stopped");
    // The shell's convention for a death by signal.
    Ok(ExitCode::from(128 + number))
}

/// ssh's `-L [bind:]port:host:hostport`, IPv6 addresses in brackets.
fn local_forward(spec: &Spec) -> String {
    let bracket = |host: &str| {
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        }
    };
    format!(
        "{}:{}:{}:{}",
        bracket(&spec.bind),
        spec.local_port,
        bracket(spec.host.as_deref().unwrap_or("localhost")),
        spec.remote_port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_become_ssh_local_forwards() {
        let spec: Spec = "8888:8888".parse().unwrap();
        assert_eq!(local_forward(&spec), "127.0.0.1:8888:localhost:8888");
        let spec: Spec = "[::1]:80:[fd00::5]:8080".parse().unwrap();
        assert_eq!(local_forward(&spec), "[::1]:80:[fd00::5]:8080");
    }
}
