//! `sm-ssh config print|install`: the `Host *.sagemaker` block of
//! `~/.ssh/config`, so plain `ssh my-job.training.sagemaker` (and IDEs) work.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::Global;
use crate::keys::Identity;
use crate::sshconfig::{self, Installed, Paths};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Print the block on stdout.
    Print,
    /// Add the block to ~/.ssh/config, or update it in place; the rest of the
    /// file is kept and the previous version saved as <file>.sm-ssh.bak.
    Install {
        /// The ssh config file to edit (default: ~/.ssh/config).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let paths = Paths::current()?;
    let block = sshconfig::block(&paths, &proxy_flags(global));
    match args.action {
        Action::Print => print!("{block}"),
        Action::Install { file } => {
            // The block names the key; make sure it exists.
            let identity = Identity::ensure()?;
            let file = match file {
                Some(file) => file,
                None => sshconfig::default_config_path()?,
            };
            match sshconfig::install(&file, &block)? {
                Installed::Unchanged => {
                    eprintln!("{} already has the current sm-ssh block.", file.display())
                }
                Installed::Written { backup } => {
                    eprintln!("Installed the sm-ssh block in {}.", file.display());
                    if let Some(backup) = backup {
                        eprintln!("The previous version is saved as {}.", backup.display());
                    }
                }
            }
            eprintln!(
                "SSH key: {} ({})\n  {}\nTry: ssh <job>.training.sagemaker",
                identity.path().display(),
                identity.fingerprint(),
                identity.public_key_line()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Global options worth baking into the ProxyCommand: the profile and region
/// this block was made for.
fn proxy_flags(global: &Global) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(profile) = &global.profile {
        flags.extend(["--profile".to_string(), profile.clone()]);
    }
    if let Some(region) = global.region() {
        flags.extend(["--region".to_string(), region.to_owned()]);
    }
    flags
}
