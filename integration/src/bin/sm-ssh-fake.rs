//! Runs the fake AWS until Ctrl-C: `sm-ssh-fake [--config seed.json]`.
//! Prints `export …` lines that point the AWS SDK and CLI at it.

use std::path::PathBuf;
use std::process::ExitCode;

use tracing_subscriber::filter::{LevelFilter, Targets};

use sm_ssh_integration::world::{Instance, Seed};
use sm_ssh_integration::{config, FakeAws};

const USAGE: &str = "usage: sm-ssh-fake [--config FILE]\n\n\
Starts a fake SSM API, STS and Session Manager data channel on 127.0.0.1 and\n\
prints the shell exports that point the AWS SDK and CLI at it. FILE is a JSON\n\
seed (see docs/fake-aws.md); without it, one online instance mi-00000000000000001.\n\
Example: eval \"$(sm-ssh-fake --config seed.json &)\"";

#[tokio::main]
async fn main() -> ExitCode {
    use tracing_subscriber::prelude::*;
    // RUST_LOG as a list of `target=level` (or a bare default level).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sm-ssh-fake: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let mut config_file: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => {
                let file = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--config needs a file\n{USAGE}"))?;
                config_file = Some(file.into());
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let seed = match config_file {
        Some(path) => config::load(&path)?,
        None => Seed {
            instances: vec![Instance {
                id: "mi-00000000000000001".into(),
                ..Instance::default()
            }],
            ..Seed::default()
        },
    };
    let fake = FakeAws::start(seed).await?;
    print!("{}", config::exports(&fake.env()));
    eprintln!(
        "sm-ssh-fake: listening on {}; Ctrl-C to stop",
        fake.endpoint()
    );
    tokio::signal::ctrl_c().await?;
    fake.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
