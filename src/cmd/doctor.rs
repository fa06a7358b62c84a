//! `sm-ssh doctor`: check every AWS-side and local prerequisite of SSH.

use std::process::ExitCode;

use crate::cli::Global;
use crate::doctor::{self, Options, Source};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").args(["role", "job", "notebook", "domain"])))]
pub struct Args {
    /// Check this SageMaker execution role.
    #[arg(long, value_name = "ARN")]
    pub role: Option<String>,
    /// Check the execution role and network of this training job, and its
    /// remote debugging (on, Training, no network isolation, ssmmessages:*).
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Check the execution role and network of this notebook instance.
    #[arg(long, value_name = "NAME")]
    pub notebook: Option<String>,
    /// Check the execution role and network of a Studio user profile in this domain.
    #[arg(long, value_name = "ID", requires = "user_profile")]
    pub domain: Option<String>,
    /// The Studio user profile (with --domain).
    #[arg(long, value_name = "NAME", requires = "domain")]
    pub user_profile: Option<String>,
    /// Check this Studio space's remote access: settings, app, instance type,
    /// image, sagemaker:StartSession and per-user isolation, network.
    #[arg(long, value_name = "SPACE")]
    pub space: Option<String>,
    /// Check SSH to this HyperPod cluster's nodes: the cluster, its running
    /// nodes, ssm:StartSession on their targets.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// Check this inference endpoint's SSM access: EnableSSMAccess on its
    /// variants, instances whose SSM agent runs.
    #[arg(long, value_name = "NAME")]
    pub endpoint: Option<String>,
    /// Also check the SSM tier (only) in these regions (repeat, or
    /// comma-separate). Repeat --region to check the tier and the managed
    /// instances of several regions.
    #[arg(long = "also-region", value_name = "REGION", value_delimiter = ',')]
    pub also_region: Vec<String>,
    /// Evaluate the team-isolating policies (`sm-ssh policy … --team-tag KEY`).
    #[arg(long, value_name = "KEY")]
    pub team_tag: Option<String>,
    /// Print the report as JSON (schema in docs/admin-guide.md).
    #[arg(long)]
    pub json: bool,
    /// Turn on the SSM advanced-instances tier where it is off (asks first).
    #[arg(long)]
    pub fix: bool,
    /// With --fix: don't ask.
    #[arg(long, requires = "fix")]
    pub yes: bool,
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let target = if let Some(arn) = args.role {
        Some(Source::Role(arn))
    } else if let Some(name) = args.job {
        Some(Source::TrainingJob(name))
    } else if let Some(name) = args.notebook {
        Some(Source::Notebook(name))
    } else {
        args.domain
            .zip(args.user_profile)
            .map(|(domain, profile)| Source::UserProfile { domain, profile })
    };
    let options = Options {
        target,
        extra_regions: args.also_region,
        team_tag: args.team_tag,
        fix: args.fix,
        yes: args.yes,
        profile: global.profile.clone(),
        regions: global.region.clone(),
        space: args.space,
        cluster: args.cluster,

        endpoint: args.endpoint,
    };
    let sdk = crate::aws::load(global).await;
    let report = doctor::run(&options, &sdk).await;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::from(report.exit_code))
}
