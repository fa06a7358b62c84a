//! `sm-ssh playground --serve`: keep the demo running and tell the user how
//! to point sm-ssh and ssh at it from another terminal.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use super::account::{self, Broken};
use super::{Demo, DEMO_HOST, DEMO_SPACE_HOST as DEMO_SPACE};

/// The last line printed once everything is ready (tests wait for it).
pub const READY: &str = "# Ctrl-C stops the playground.";

pub async fn serve(broken: Option<Broken>) -> anyhow::Result<ExitCode> {
    let demo = Demo::start_with(broken).await?;
    let config_path = demo.scratch.path().join("ssh_config");
    let known_hosts = demo.scratch.path().join("known_hosts");
    let space_key = demo
        .fake
        .space_known_hosts_line(super::demo::DEMO_DOMAIN, "demo", DEMO_SPACE)
        .context("the demo space's app is not running")?;
    std::fs::write(
        &known_hosts,
        format!("{}\n{space_key}\n", demo.known_hosts_line()),
    )
    .context("cannot write the playground's known_hosts")?;
    let exe = std::env::current_exe().context("cannot tell where the sm-ssh binary is")?;
    // ssh reads its IdentityFile before the ProxyCommand runs: make the key now.
    let identity = crate::keys::Identity::ensure()?;
    let identity = identity.path().to_path_buf();
    let config = ssh_config(
        &exe.display().to_string(),
        &known_hosts.display().to_string(),
        &identity.display().to_string(),
    );
    std::fs::write(&config_path, &config).context("cannot write the playground's ssh config")?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# sm-ssh playground: a fake AWS with one SageMaker training job, {DEMO_HOST}"
    );
    let _ = writeln!(
        out,
        "# ({}, its sshd on {}). In another terminal, paste:",
        demo.instance_id,
        demo.sshd.addr()
    );
    for (key, value) in demo.fake.env() {
        let _ = writeln!(out, "export {key}={value}");
    }
    let _ = writeln!(out, "# then try:");
    let _ = writeln!(out, "#   sm-ssh list");
    let _ = writeln!(out, "#   sm-ssh connect {DEMO_HOST}");
    let _ = writeln!(out, "#   ssh -F {} {DEMO_HOST}", config_path.display());
    let _ = writeln!(out, "#   sm-ssh forward {DEMO_HOST} -L 2222:22");
    let _ = writeln!(
        out,
        "#   ssh -F {} {DEMO_SPACE}   (a Studio space: no key needed)",
        config_path.display()
    );
    let _ = writeln!(
        out,
        "#   scp FILE {DEMO_HOST}: and sftp {DEMO_HOST} (with -F as above)"
    );
    let _ = writeln!(
        out,
        "#   sm-ssh connect --user \"$(id -un)\" {}   (a HyperPod node, its sshd on {}; its sessions run as you)",
        super::demo::DEMO_NODE_HOST,
        demo.node_sshd.addr()
    );
    let _ = writeln!(out, "#   sm-ssh doctor --cluster demo");
    let _ = writeln!(
        out,
        "#   sm-ssh connect {}.training.sagemaker --node 2   (remote debugging: a root shell, no sshd)",
        super::demo::DEBUG_JOB
    );
    let _ = writeln!(
        out,
        "#   sm-ssh connect {}.inference.sagemaker   (an endpoint with SSM access)",
        super::demo::DEMO_ENDPOINT
    );
    let _ = writeln!(out, "#   sm-ssh doctor --job demo");
    let account_id = demo.fake.world().lock().unwrap().identity.account.clone();
    let _ = writeln!(
        out,
        "#   sm-ssh doctor --role {}",
        account::execution_role_arn(&account_id)
    );
    let _ = writeln!(
        out,
        "# `ssh` needs sm-ssh's key pushed first: `sm-ssh connect` pushes it."
    );
    let _ = writeln!(out, "# The ssh config ({}):", config_path.display());
    for line in config.lines() {
        let _ = writeln!(out, "#   {line}");
    }
    let _ = writeln!(out, "{READY}");
    print!("{out}");

    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("sm-ssh playground: stopping");
    drop(demo);
    Ok(ExitCode::SUCCESS)
}

/// A `Host *.sagemaker` block for the demo, using this binary as ProxyCommand.
fn ssh_config(exe: &str, known_hosts: &str, identity: &str) -> String {
    format!(
        "Host *.space.sagemaker\n\
         \x20 User sagemaker-user\n\
         Host *.sagemaker\n\
         \x20 User root\n\
         \x20 ProxyCommand '{exe}' proxy --user %r %h\n\
         \x20 IdentityFile \"{identity}\"\n\
         \x20 IdentitiesOnly yes\n\
         \x20 UserKnownHostsFile \"{known_hosts}\"\n\
         \x20 StrictHostKeyChecking yes\n"
    )
}
