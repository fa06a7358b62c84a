//! One module per subcommand; `run` dispatches and turns errors into exit codes.

pub mod completions;
pub mod config;
pub mod connect;
mod connect_shell;
pub mod cp;
pub mod debug;
pub mod doctor;
pub mod exec;
pub mod forward;
mod forward_ssh;
pub mod list;
pub mod playground;
pub mod plugin;
pub mod policy;
pub mod proxy;
pub mod sessions;
pub mod shell;
pub mod space;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> ExitCode {
    let global = cli.global;
    let result = match cli.command {
        Command::Proxy(args) => proxy::run(args, &global).await,
        Command::Connect(args) => connect::run(args, &global).await,
        Command::Shell(args) => shell::run(args, &global).await,
        Command::Exec(args) => exec::run(args, &global).await,
        Command::Forward(args) => forward::run(args, &global).await,
        Command::Cp(args) => cp::run(args, &global).await,
        Command::Debug(args) => debug::run(args, &global).await,
        Command::List(args) => list::run(args, &global).await,
        Command::Config(args) => config::run(args, &global).await,
        Command::Doctor(args) => doctor::run(args, &global).await,
        Command::Policy(args) => policy::run(args, &global).await,
        Command::Playground(args) => playground::run(args, &global).await,
        Command::Plugin(args) => plugin::run(args, &global).await,
        Command::Space(args) => space::run(args, &global).await,
        Command::Sessions(args) => sessions::run(args, &global).await,
        Command::Completions(args) => completions::run(args, &global).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => crate::error::report(&error, &global),
    }
}
