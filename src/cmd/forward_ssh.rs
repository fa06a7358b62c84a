//! `sm-ssh forward` to a Studio space: the space's channel carries one SSH
//! connection, so the forwards ride on SSH's own (`ssh -N -L …` through
//! `sm-ssh proxy`, as `connect` runs it).

use std::process::ExitCode;

use super::connect::{run_ssh, SshPlan};
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
    run_ssh(plan.argv()).await
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
