//! `sm-ssh exec <target> -- COMMAND…`: one command through
//! `AWS-StartNonInteractiveCommand` (stdout and stderr apart, the remote exit
//! status as ours), or with `--interactive` through
//! `AWS-StartInteractiveCommand` on a terminal.

use std::process::ExitCode;

use super::shell::{exit_status, start_and_run, Local};
use crate::cli::Global;
use crate::error::{exit, Failure};
use crate::resolve::ResolveArgs;
use crate::terminal;

pub const NON_INTERACTIVE_DOCUMENT: &str = "AWS-StartNonInteractiveCommand";
pub const INTERACTIVE_DOCUMENT: &str = "AWS-StartInteractiveCommand";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run the command on a remote terminal (AWS-StartInteractiveCommand):
    /// for programs that need one (top, vi, a REPL).
    #[arg(long, short = 't')]
    pub interactive: bool,
    /// The session document (its `command` parameter gets the command).
    #[arg(long, value_name = "NAME")]
    pub document: Option<String>,
    #[command(flatten)]
    pub resolve: ResolveArgs,
    /// `<name>.<kind>.sagemaker`, `mi-…`, `i-…` or another target `sm-ssh list` shows.
    pub target: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let command = command_line(&args.command)?;
    let (default, local) = if args.interactive {
        let local = if terminal::stdin_is_terminal() {
            Local::Terminal
        } else {
            Local::Plain
        };
        (INTERACTIVE_DOCUMENT, local)
    } else {
        (NON_INTERACTIVE_DOCUMENT, Local::Command)
    };
    let document = args.document.as_deref().unwrap_or(default);
    let end = start_and_run(
        global,
        &args.target,
        &args.resolve,
        document,
        &[("command", command)],
        local,
    )
    .await?;
    if local == Local::Command {
        let output = end.output.trim();
        if !output.is_empty() {
            eprintln!("sm-ssh: {output}");
        }
        if end.exit_code.is_none() {
            tracing::warn!(
                "the agent sent no exit code (the document does not separate the output streams)"
            );
        }
    }
    Ok(exit_status(&end))
}

/// The words as one command line that splits back into the same words,
/// both for the agent's shell-style split and for `sh -c`.
fn command_line(words: &[String]) -> anyhow::Result<String> {
    shlex::try_join(words.iter().map(String::as_str)).map_err(|_| {
        Failure::new(
            exit::USAGE,
            "the command contains a NUL byte, which cannot be sent",
        )
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_survive_the_round_trip() {
        let words: Vec<String> = ["sh", "-c", "echo out; echo 'err' >&2; exit 7"]
            .map(String::from)
            .into();
        let line = command_line(&words).unwrap();
        assert_eq!(shlex::split(&line).unwrap(), words);
    }
}
