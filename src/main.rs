//! `sm-ssh`: SSH into SageMaker and SSM-managed instances through Session Manager.

mod aws;
mod cli;
mod cmd;
mod keypush;
mod session;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(cmd::run(cli))
}
