//! `sm-ssh space enable|status`: what stands between a Studio space and
//! remote access, and the fix. `enable` sets `RemoteAccess = ENABLED`
//! (UpdateSpace) and, since a running app picks the setting up only when it
//! starts again, restarts the app (DeleteApp, CreateApp) after asking, then
//! waits until it is InService.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aws_sdk_sagemaker::types::{AppType, FeatureStatus, ResourceSpec, SpaceSettings};

use crate::cli::Global;
use crate::error::{exit, AwsError, Failure};
use crate::path::space::{self, SpaceInfo, APP_NAME};
use crate::target::{SpaceTarget, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Turn remote access on and (re)start the space's app so it applies.
    Enable {
        /// `<space>.<domain>.space.sagemaker`, `<space>.space.sagemaker` or the space ARN.
        name: String,
        /// Restart a running app without asking.
        #[arg(long)]
        yes: bool,
        /// Restart the app even when remote access was already on.
        #[arg(long)]
        restart: bool,
        /// How long to wait for the app, in seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// Show the space's remote-access settings and what blocks them (exit 4 when blocked).
    Status {
        /// `<space>.<domain>.space.sagemaker`, `<space>.space.sagemaker` or the space ARN.
        name: String,
    },
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let sdk = crate::aws::load(global).await;
    match args.action {
        Action::Status { name } => {
            let target = space_target(&name)?;
            let client = aws_sdk_sagemaker::Client::new(&space::config_for(&sdk, &target));
            let info = space::describe(&client, &target).await?;
            print!("{}", status_text(&info));
            Ok(match info.blocker() {
                None => ExitCode::SUCCESS,
                Some(_) => ExitCode::from(exit::OFFLINE),
            })
        }
        Action::Enable {
            name,
            yes,
            restart,
            timeout,
        } => {
            let target = space_target(&name)?;
            let client = aws_sdk_sagemaker::Client::new(&space::config_for(&sdk, &target));
            let info = space::describe(&client, &target).await?;
            let name = info.host_name();
            let restart = restart || !info.remote_access;
            // Ask before changing anything: a running app must restart to apply it.
            if info.is_running() && restart {
                confirm(&name, yes)?;
            }
            if !info.remote_access {
                client
                    .update_space()
                    .domain_id(&info.domain)
                    .space_name(&info.space)
                    .space_settings(
                        SpaceSettings::builder()
                            .remote_access(FeatureStatus::Enabled)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("sagemaker:UpdateSpace", &e))?;
                eprintln!("Remote access is now enabled on {name}.");
            }
            let deadline = Instant::now() + Duration::from_secs(timeout);
            if info.is_running() {
                if !restart {
                    eprintln!("{name} has remote access on and its app is running.");
                    return Ok(ExitCode::SUCCESS);
                }
                delete_app(&client, &info, deadline).await?;
            }
            if info.app_status.as_deref() == Some("Pending") && !info.is_running() {
                wait_for(&client, &info, "InService", deadline).await?;
            } else {
                create_app(&client, &info, deadline).await?;
            }
            eprintln!("{name} is running with remote access: ssh {name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn space_target(name: &str) -> anyhow::Result<SpaceTarget> {
    match Target::parse(name)? {
        Target::Space(target) => Ok(target),
        other => Err(Failure::new(
            exit::USAGE,
            format!(
                "{other} is not a Studio space: name it <space>.<domain>.space.sagemaker, \
                 <space>.space.sagemaker or by its ARN"
            ),
        )
        .into()),
    }
}

/// The lines of `space status`.
fn status_text(info: &SpaceInfo) -> String {
    let on = |b: bool| if b { "ENABLED" } else { "DISABLED" };
    let mut text = format!(
        "space          {}\narn            {}\napp            {} {} ({})\ninstance type  {}\nimage          {}\nremote access  {}\n",
        info.host_name(),
        info.arn,
        info.app_type,
        APP_NAME,
        info.app_status.as_deref().unwrap_or("not started"),
        info.instance_type,
        info.image_label(),
        on(info.remote_access),
    );
    match info.blocker() {
        None => text.push_str(&format!("ready: ssh {}\n", info.host_name())),
        Some(blocker) => text.push_str(&format!("blocked: {blocker}\n")),
    }
    text
}

/// Asks before stopping a running app (its kernels and terminals end).
fn confirm(name: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    let refuse = || {
        Failure::new(
            exit::USAGE,
            format!(
                "{name} must restart for remote access to apply; its kernels and terminals \
                 stop. Rerun with --yes to restart it."
            ),
        )
    };
    if !std::io::stdin().is_terminal() {
        return Err(refuse().into());
    }
    eprint!("Restart {name} now? Its kernels and terminals stop. [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(refuse().into()),
    }
}

async fn delete_app(
    client: &aws_sdk_sagemaker::Client,
    info: &SpaceInfo,
    deadline: Instant,
) -> anyhow::Result<()> {
    client
        .delete_app()
        .domain_id(&info.domain)
        .space_name(&info.space)
        .app_type(AppType::from(info.app_type.as_str()))
        .app_name(APP_NAME)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sagemaker:DeleteApp", &e))?;
    wait_for(client, info, "Deleted", deadline).await
}

async fn create_app(
    client: &aws_sdk_sagemaker::Client,
    info: &SpaceInfo,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut request = client
        .create_app()
        .domain_id(&info.domain)
        .space_name(&info.space)
        .app_type(AppType::from(info.app_type.as_str()))
        .app_name(APP_NAME);
    if !info.instance_type.is_empty() {
        request = request.resource_spec(
            ResourceSpec::builder()
                .instance_type(info.instance_type.as_str().into())
                .build(),
        );
    }
    request
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sagemaker:CreateApp", &e))?;
    wait_for(client, info, "InService", deadline).await
}

/// Polls DescribeApp until the app's status is `wanted` (a missing app
/// counts as Deleted), with a spinner on a terminal.
async fn wait_for(
    client: &aws_sdk_sagemaker::Client,
    info: &SpaceInfo,
    wanted: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let mut delay = Duration::from_millis(250);
    let result = loop {
        let answer = client
            .describe_app()
            .domain_id(&info.domain)
            .space_name(&info.space)
            .app_type(AppType::from(info.app_type.as_str()))
            .app_name(APP_NAME)
            .send()
            .await;
        let status = match answer {
            Ok(app) => app
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            Err(error) => {
                let aws = AwsError::from_sdk("sagemaker:DescribeApp", &error);
                if aws.detail.starts_with("ResourceNotFound") {
                    "Deleted".to_string()
                } else {
                    break Err(aws.into());
                }
            }
        };
        spinner.set_message(format!("{}: app {APP_NAME} is {status}", info.host_name()));
        if status == wanted {
            break Ok(());
        }
        if status == "Failed" {
            break Err(Failure::new(
                exit::AWS,
                format!(
                    "the app of {} failed to start: see the space in Studio for why",
                    info.host_name()
                ),
            )
            .into());
        }
        if Instant::now() >= deadline {
            break Err(Failure::new(
                exit::OFFLINE,
                format!(
                    "gave up waiting for the app of {} to be {wanted} (it is {status}); \
                     `sm-ssh space status {}` shows where it is",
                    info.host_name(),
                    info.host_name()
                ),
            )
            .into());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    spinner.finish_and_clear();
    result
}
