//! `sm-ssh completions`: shell completion scripts and the man page, made from
//! the command-line definition so they never drift from it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish, powershell, or `man` for the man page (roff).
    #[arg(value_name = "SHELL|man", value_parser = ["bash", "zsh", "fish", "elvish", "powershell", "man"])]
    pub shell: String,
}

pub async fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    if args.shell == "man" {
        clap_mangen::Man::new(command)
            .render(&mut out)
            .context("rendering the man page")?;
    } else {
        let shell: Shell = args.shell.parse().map_err(anyhow::Error::msg)?;
        clap_complete::generate(shell, &mut command, "sm-ssh", &mut out);
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out).context("writing to stdout")?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
