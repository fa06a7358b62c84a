//! `sm-ssh`: SSH into SageMaker and SSM-managed instances through Session Manager.

mod audit;
mod aws;
mod cache;
mod cli;
mod cmd;
mod copy;
mod doctor;
mod error;
mod keypush;
mod keys;
mod known_hosts;
mod logging;
mod path;
mod playground;
mod policy;
mod port;
mod prompt;
mod resolve;
mod session;
mod signing;
mod ssh_client;
mod sshconfig;
mod target;
mod terminal;
mod warm;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Installed as `session-manager-plugin`, the binary speaks the AWS CLI's plugin convention.
    let cli = cli::Cli::parse_from(cmd::plugin::argv()).validated();
    logging::init(cli.global.verbose);
    // One thread: a paced session wakes about 2000 times a second for a few
    // microseconds of work, and a multi-threaded runtime handed each wake to
    // a parked worker, which cost more than the work (docs/benchmarks.md,
    // "Runtime"). Blocking work (stdin, file hashes) has its own threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sm-ssh: cannot start the async runtime: {error}");
            return ExitCode::from(error::exit::FAILURE);
        }
    };
    let code = runtime.block_on(cmd::run(cli));
    // A blocking read of stdin (the bridge's) never returns by itself: after a
    // failed session, waiting for it would hang until ssh sent more bytes.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}
