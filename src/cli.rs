//! The command line: global options and one subcommand per module of `cmd`.

use clap::{Args, Parser, Subcommand};

use crate::cmd;

#[derive(Debug, Parser)]
#[command(name = "sm-ssh", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// AWS profile to use (default: AWS_PROFILE, then the default profile).
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// AWS region to use (default: AWS_REGION, then the profile's region).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// More diagnostics on stderr (-v debug, -vv trace). SM_SSH_LOG=<file> logs to a file.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The ssh ProxyCommand: bridge stdin/stdout to an SSH session on the target.
    Proxy(cmd::proxy::Args),
    /// Open an interactive ssh session (or run a command) on the target.
    Connect(cmd::connect::Args),
    /// Forward local ports to the target without ssh.
    Forward(cmd::forward::Args),
    /// List your SSH-enabled SageMaker instances.
    List(cmd::list::Args),
    /// Print or install the `Host *.sagemaker` block of ~/.ssh/config.
    Config(cmd::config::Args),
    /// Check the AWS-side prerequisites of SSH and say how to fix each gap.
    Doctor(cmd::doctor::Args),
    /// Print the IAM policies SSH needs, filled in.
    Policy(cmd::policy::Args),
    /// Run the whole flow against an embedded fake AWS, with no account.
    Playground(cmd::playground::Args),
    /// Act as `session-manager-plugin` for the AWS CLI.
    Plugin(cmd::plugin::Args),
    /// Print shell completions.
    Completions(cmd::completions::Args),
}
