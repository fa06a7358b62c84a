//! `sm-ssh debug enable <job>`: turns on remote debugging for a running
//! training job (UpdateTrainingJob with `RemoteDebugConfig`, which SageMaker
//! allows while the job is Downloading or Training), after confirmation.

use std::process::ExitCode;

use crate::cli::Global;
use crate::error::{exit, Failure};
use crate::path::training;
use crate::target::{Kind, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Turn remote debugging on (the job must be Downloading or Training).
    Enable {
        /// The job: its name or `<job>.training.sagemaker`.
        job: String,
        /// Don't ask.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let Action::Enable { job, yes } = args.action;
    let name = match Target::parse(&job) {
        Ok(Target::SageMaker(named)) if named.kind == Kind::Training => named.name,
        _ if !job.contains('.') && !job.is_empty() => job.clone(),
        _ => {
            return Err(Failure::new(
                exit::USAGE,
                format!("`{job}` is not a training job: give its name or <job>.training.sagemaker"),
            )
            .into())
        }
    };
    let sdk = crate::aws::load(global).await;
    let client = aws_sdk_sagemaker::Client::new(&sdk);
    let Some(found) = training::describe(&client, &name).await? else {
        return Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "there is no training job {name} in {} (check the name and --region)",
                crate::resolve::region_name(&sdk)
            ),
        )
        .into());
    };
    let host = format!("{name}.training.sagemaker");
    if found.remote_debug {
        eprintln!("sm-ssh: remote debugging is already on for {name}: `sm-ssh connect {host}`");
        return Ok(ExitCode::SUCCESS);
    }
    if found.network_isolation {
        return Err(Failure::new(
            exit::FAILURE,
            format!("training job {name} runs with network isolation, which remote debugging does not support"),
        )
        .into());
    }
    if !matches!(found.secondary_status.as_str(), "Downloading" | "Training") {
        return Err(Failure::new(
            exit::FAILURE,
            format!(
                "training job {name} is {} ({}): SageMaker turns remote debugging on only while a \
                 job is Downloading or Training; start new jobs with RemoteDebugConfig \
                 EnableRemoteDebug=true",
                found.status, found.secondary_status
            ),
        )
        .into());
    }
    let question = format!(
        "Turn on remote debugging for training job {name} ({})? Anyone allowed ssm:StartSession \
         on sagemaker-training-job:{name}_* gets a root shell in it.",
        found.secondary_status
    );
    if !crate::prompt::confirm(&question, yes) {
        return Err(Failure::new(
            exit::USAGE,
            format!("not changed: confirm on a terminal, or pass --yes (`sm-ssh debug enable {name} --yes`)"),
        )
        .into());
    }
    training::enable_remote_debug(&sdk, &name).await?;
    eprintln!(
        "sm-ssh: remote debugging is on for {name}; once it is Training, `sm-ssh connect {host}` \
         opens a shell (--node N for host algo-N)"
    );
    Ok(ExitCode::SUCCESS)
}
