//! `sm-ssh connect` where no sshd runs (training jobs with remote debugging,
//! endpoints with SSM access): a Session Manager shell instead, as
//! `sm-ssh shell` opens it, or the command given, as `sm-ssh exec` runs it.
//! ssh options cannot apply without ssh: they are refused with what to use.

use std::process::ExitCode;

use super::exec::NON_INTERACTIVE_DOCUMENT;
use super::shell::{exit_status, start_on, Local, SHELL_DOCUMENT};
use crate::error::{exit, Failure};
use crate::path::Reach;
use crate::terminal;

pub async fn run(
    sdk: &aws_config::SdkConfig,
    reach: &Reach,
    label: &str,
    user: Option<&str>,
    ssh_args: &[String],
) -> anyhow::Result<ExitCode> {
    // ssh takes its options before the command (clap keeps a `--` only
    // when it follows other words).
    if let Some(option) = ssh_args
        .first()
        .filter(|a| a.starts_with('-') && *a != "--")
    {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{label} has no SSH server, so ssh options such as {option} cannot apply: \
                 `sm-ssh forward {label} -L LOCAL:REMOTE` forwards ports, `sm-ssh shell {label}` \
                 opens a shell"
            ),
        )
        .into());
    }
    let far = reach.default_user;
    if let Some(user) = user.filter(|u| *u != far) {
        eprintln!("sm-ssh: Session Manager logs in as {far} on {label}, not {user}: run `su - {user}` there");
    }
    let command: Vec<&str> = ssh_args
        .iter()
        .map(String::as_str)
        .skip_while(|a| *a == "--")
        .collect();
    if command.is_empty() {
        eprintln!(
            "sm-ssh: {label} has no SSH server; opening a Session Manager shell on {} as {far}",
            reach.session_target
        );
        let local = if terminal::stdin_is_terminal() {
            Local::Terminal
        } else {
            Local::Plain
        };
        let end = start_on(
            sdk,
            &reach.session_target,
            label,
            SHELL_DOCUMENT,
            &[],
            local,
        )
        .await?;
        return Ok(exit_status(&end));
    }
    let line = shlex::try_join(command.iter().copied()).map_err(|_| {
        Failure::new(
            exit::USAGE,
            "the command contains a NUL byte, which cannot be sent",
        )
    })?;
    tracing::info!(target = %reach.session_target, user = far, "no sshd: running the command through Session Manager");
    let end = start_on(
        sdk,
        &reach.session_target,
        label,
        NON_INTERACTIVE_DOCUMENT,
        &[("command", line)],
        Local::Command,
    )
    .await?;
    Ok(exit_status(&end))
}
