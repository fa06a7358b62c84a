//! `sm-ssh playground`: the whole flow against an embedded fake AWS.

use std::process::ExitCode;

use crate::cli::Global;
use crate::playground::account::Broken;
use crate::playground::{self, Client, FlowOptions};

/// What the demo runs on the far side unless told otherwise.
const DEFAULT_COMMAND: &str =
    r#"printf 'hello from %s: user %s in %s\n' "$(uname -n)" "$USER" "$PWD"; uname -sm"#;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the fake AWS running and print the `export` lines and ssh config
    /// to use it from another terminal.
    #[arg(long, conflicts_with_all = ["shell", "command", "client"])]
    pub serve: bool,
    /// After the command, open an interactive shell (needs a terminal).
    #[arg(long)]
    pub shell: bool,
    /// The command to run on the demo instance.
    #[arg(long, value_name = "COMMAND")]
    pub command: Option<String>,
    /// The SSH client: OpenSSH when installed (auto), or the built-in one.
    #[arg(long, value_enum, default_value_t)]
    pub client: Client,
    /// Misconfigure the account in one way: with --serve, serve it; alone,
    /// run `sm-ssh doctor` against it (every KIND in turn when none is given).
    #[arg(long, value_name = "KIND", value_enum, conflicts_with_all = ["shell", "command", "client"])]
    pub broken: Option<Option<Broken>>,
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    if global.profile.is_some() || global.region().is_some() {
        eprintln!("sm-ssh playground: --profile and --region do not apply; the playground uses its own fake AWS");
    }
    match (args.serve, args.broken) {
        (true, broken) => return playground::serve(broken.flatten()).await,
        (false, Some(Some(kind))) => return playground::run_broken(&[kind]).await,
        (false, Some(None)) => return playground::run_broken(&Broken::ALL).await,
        (false, None) => {}
    }
    playground::run_flow(FlowOptions {
        client: args.client,
        command: args.command.unwrap_or_else(|| DEFAULT_COMMAND.to_string()),
        shell: args.shell,
    })
    .await
}
