//! `sm-ssh doctor`: every prerequisite of SSH checked in turn, each outcome
//! with the exact fix. A check the caller may not run is skipped with the
//! permission it needs; nothing here makes doctor itself fail.

mod attribution;
mod client;
mod domain_vpc;
mod ec2;
mod hyperpod;
mod iam;
mod identity;
mod instances;
mod local;
mod network;
mod remote_debug;
pub mod report;
mod role;
mod simulate;
mod space;
mod space_image;
mod space_network;
mod tier;

use aws_config::SdkConfig;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};

use report::{Check, Report};

/// What to check, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The SageMaker resource whose execution role and network are checked.
    pub target: Option<role::Source>,
    /// Regions to check the SSM tier in, besides those of [`Options::regions`].
    pub extra_regions: Vec<String>,
    /// The ABAC tag key of the team-isolating policies (`--team-tag`).
    pub team_tag: Option<String>,
    /// Set the advanced tier where it is missing.
    pub fix: bool,
    /// Don't ask before changing anything.
    pub yes: bool,
    /// The profile chosen on the command line or in AWS_PROFILE.
    pub profile: Option<String>,
    /// Each `--region` given, in order: the SSM tier and the managed
    /// instances are checked in every one, IAM and SageMaker in the first.
    pub regions: Vec<String>,
    /// A Studio space to check for remote access (`--space`).
    pub space: Option<String>,
    /// A HyperPod cluster to check (`--cluster`).
    pub cluster: Option<String>,
    /// An endpoint to check for SSM access (`--endpoint`).
    pub endpoint: Option<String>,
}

pub use role::Source;

/// Why an AWS call gave no answer.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The caller may not call it: the named permission is missing.
    Denied(&'static str),
    /// What was asked about does not exist (AWS's message).
    NotFound(String),
    Other(String),
}

impl Failure {
    pub fn from_sdk<E, R>(permission: &'static str, error: SdkError<E, R>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        let message = error.message().unwrap_or_default();
        match error.code() {
            Some(code) if is_denied(code) => Failure::Denied(permission),
            Some(code) if is_not_found(code, message) => Failure::NotFound(message.to_owned()),
            _ => Failure::Other(crate::error::AwsError::from_sdk(permission, &error).summary()),
        }
    }

    /// The check this failure turns into: SKIP, since the check could not run.
    fn skip(self, id: &'static str) -> Check {
        match self {
            Failure::Denied(permission) => Check::denied(id, permission),
            Failure::NotFound(message) | Failure::Other(message) => {
                Check::skip(id, format!("could not run: {message}"))
            }
        }
    }
}

fn is_denied(code: &str) -> bool {
    code.starts_with("AccessDenied")
        || code == "UnauthorizedOperation"
        || code == "UnauthorizedAccess"
        || code == "NotAuthorized"
}

/// IAM's and SageMaker's ways of saying "no such thing". SageMaker answers a
/// missing training job or notebook with a ValidationException.
fn is_not_found(code: &str, message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    matches!(
        code,
        "NoSuchEntity" | "ResourceNotFound" | "ResourceNotFoundException"
    ) || (code == "ValidationException"
        && [
            "not found",
            "could not find",
            "recordnotfound",
            "does not exist",
        ]
        .iter()
        .any(|phrase| message.contains(phrase)))
}

/// Runs every check and returns the report.
pub async fn run(options: &Options, sdk: &SdkConfig) -> Report {
    let mut checks = Vec::new();
    let region_check = identity::region(options, sdk);
    let caller = identity::caller(sdk).await;
    checks.push(caller.check.clone());
    checks.push(region_check);
    let region = sdk.region().map(|r| r.to_string());
    let Some(me) = caller.identity else {
        checks.extend(local::checks());
        return Report::new(None, region, checks, false);
    };
    let regional = if options.regions.is_empty() {
        region.iter().cloned().collect()
    } else {
        distinct(&options.regions)
    };
    let tiers = distinct(&[regional.as_slice(), &options.extra_regions].concat());
    for region in &tiers {
        checks.push(tier::check(sdk, &me, region, options).await);
    }
    let home_region = region.clone().unwrap_or_else(|| "us-east-1".into());
    let target = role::resolve(sdk, options.target.as_ref()).await;
    checks.extend(role::checks(sdk, &me, &home_region, &target, options).await);
    checks.push(client::check(sdk, &me, &home_region, options).await);
    if let Some(name) = &options.space {
        checks.extend(space::checks(sdk, &me, name, options).await);
    }
    if let Some(name) = &options.cluster {
        checks.extend(hyperpod::checks(sdk, &me, name, options).await);
    }
    if let Some(Source::TrainingJob(name)) = &options.target {
        checks.extend(remote_debug::job_checks(sdk, name).await);
    }
    if let Some(name) = &options.endpoint {
        checks.extend(remote_debug::endpoint_checks(sdk, name).await);
    }
    checks.push(network::check(sdk, &target, &home_region).await);
    for region in &regional {
        checks.push(instances::check(sdk, &me, region).await);
    }
    if regional.is_empty() {
        checks.push(report::Check::skip(
            "managed-instances",
            "no region is configured (see the region check)",
        ));
    }
    checks.push(attribution::check(sdk, &home_region).await);
    checks.extend(local::checks());
    Report::new(Some(me.account.clone()), region, checks, true)
}

/// `regions` without repeats, in the order given.
fn distinct(regions: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for region in regions {
        if !out.contains(region) {
            out.push(region.clone());
        }
    }
    out
}
