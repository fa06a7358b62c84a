//! The command line: global options and one subcommand per module of `cmd`.

use clap::{Args, CommandFactory, Parser, Subcommand};

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
    /// Only `doctor` takes it more than once, to check several regions.
    #[arg(long, global = true, action = clap::ArgAction::Append)]
    pub region: Vec<String>,
    /// More diagnostics on stderr (-v debug, -vv trace). SM_SSH_LOG=<file> logs to a file.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Global {
    /// The one region of this invocation (the first `--region` for doctor),
    /// or `None` to take it from the environment and profile.
    pub fn region(&self) -> Option<&str> {
        self.region.first().map(String::as_str)
    }
}

impl Cli {
    /// Usage errors clap cannot express: several `--region` outside doctor.
    /// Exits with clap's usage status (2) and message.
    pub fn validated(self) -> Cli {
        if self.global.region.len() > 1 && !matches!(self.command, Command::Doctor(_)) {
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "--region was given {} times ({}); only `sm-ssh doctor` checks several regions, \
                         every other command works in one",
                        self.global.region.len(),
                        self.global.region.join(", ")
                    ),
                )
                .exit();
        }
        self
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The ssh ProxyCommand: bridge stdin/stdout to an SSH session on the target.
    Proxy(cmd::proxy::Args),
    /// Open an interactive ssh session (or run a command) on the target.
    Connect(cmd::connect::Args),
    /// Open a shell on the target through Session Manager (no sshd needed).
    Shell(cmd::shell::Args),
    /// Run one command on the target: its output, errors and exit status.
    Exec(cmd::exec::Args),
    /// Forward local ports to the target without ssh.
    Forward(cmd::forward::Args),
    /// Copy files to or from the target over several sessions at once, verified and resumable.
    Cp(cmd::cp::Args),
    /// Turn on remote debugging for a running training job.
    Debug(cmd::debug::Args),
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
    /// Enable remote access on a Studio space, or show what blocks it.
    Space(cmd::space::Args),
    /// Act as `session-manager-plugin` for the AWS CLI.
    Plugin(cmd::plugin::Args),
    /// Who is (or was) on which instance: Session Manager sessions, and `terminate`.
    Sessions(cmd::sessions::Args),
    /// Print shell completions.
    Completions(cmd::completions::Args),
}
