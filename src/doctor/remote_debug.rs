//! `doctor --job NAME`'s remote-debugging checks (is it on, is the job
//! Training, no network isolation, the execution role's `ssmmessages:*`) and
//! `doctor --endpoint NAME`'s SSM-access checks (variants with
//! `EnableSSMAccess`, instances whose SSM agent runs).

use aws_config::SdkConfig;

use super::report::Check;
use super::role::Evaluation;
use super::{iam, simulate, Failure};
use crate::path::{endpoint, training};
use crate::policy::native;

/// The remote-debugging checks of a training job.
pub async fn job_checks(sdk: &SdkConfig, name: &str) -> Vec<Check> {
    let client = aws_sdk_sagemaker::Client::new(sdk);
    let job = match training::describe(&client, name).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            return vec![Check::skip(
                "remote-debug",
                format!("no training job {name} (see role-trust)"),
            )]
        }
        Err(error) => {
            return vec![Check::skip(
                "remote-debug",
                format!("could not run: {}", error.summary()),
            )]
        }
    };
    if !job.remote_debug {
        // The helper's path may still serve the job: a warning, not a failure.
        return vec![Check::warn(
            "remote-debug",
            format!("remote debugging is off for training job {name} (only sagemaker-ssh-helper's instance can reach it)"),
            format!("sm-ssh debug enable {name}   (while it is Downloading or Training)"),
        )];
    }
    let mut checks = vec![Check::pass(
        "remote-debug",
        format!("remote debugging is on for training job {name} ({} host(s): sagemaker-training-job:{name}_algo-1…)", job.instance_count),
    )];
    checks.push(
        if job.status == "InProgress" && job.secondary_status == "Training" {
            Check::pass(
                "remote-debug-status",
                format!("{name} is Training: its hosts take sessions"),
            )
        } else if job.status == "InProgress" {
            Check::warn(
                "remote-debug-status",
                format!(
                    "{name} is {} (SecondaryStatus {}): sessions start once it is Training",
                    job.status, job.secondary_status
                ),
                format!("sm-ssh connect {name}.training.sagemaker --wait"),
            )
        } else {
            Check::fail(
                "remote-debug-status",
                format!(
                    "{name} is {} ({}): remote debugging reaches running jobs only",
                    job.status, job.secondary_status
                ),
                "start a new training job with RemoteDebugConfig EnableRemoteDebug=true",
            )
        },
    );
    checks.push(if job.network_isolation {
        Check::fail(
            "remote-debug-network",
            format!("{name} runs with network isolation, which remote debugging does not support"),
            "start the job without EnableNetworkIsolation",
        )
    } else {
        Check::pass(
            "remote-debug-network",
            format!("{name} runs without network isolation"),
        )
    });
    checks.push(role_check(sdk, &job.role_arn, name).await);
    checks
}

/// The execution role's ssmmessages:* permissions, local and simulated.
async fn role_check(sdk: &SdkConfig, role_arn: &str, job: &str) -> Check {
    let client = aws_sdk_iam::Client::new(sdk);
    let policies = match iam::role_policies(&client, iam::name_from_arn(role_arn)).await {
        Ok(policies) => policies,
        Err(Failure::NotFound(_)) => {
            return Check::skip(
                "remote-debug-role",
                format!("{role_arn} does not exist (see role-trust)"),
            )
        }
        Err(failure) => return failure.skip("remote-debug-role"),
    };
    let requirements = native::role_requirements();
    let simulation = simulate::run(sdk, role_arn, &requirements).await;
    let statement = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": native::AGENT_ACTIONS, "Resource": "*"}]});
    let fix = format!(
        "aws iam put-role-policy --role-name {} --policy-name SSMRemoteDebugging --policy-document '{statement}'",
        iam::name_from_arn(role_arn)
    );
    let subject =
        format!("{role_arn} (from training job {job}, for the SSM agent of remote debugging)");
    Evaluation::of(&policies, &requirements).into_check(
        "remote-debug-role",
        &subject,
        fix,
        &simulation,
    )
}

/// The SSM-access checks of an endpoint.
pub async fn endpoint_checks(sdk: &SdkConfig, name: &str) -> Vec<Check> {
    let client = aws_sdk_sagemaker::Client::new(sdk);
    let found = match endpoint::describe(&client, name).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return vec![Check::fail(
                "endpoint-ssm-access",
                format!("there is no endpoint {name} in this region"),
                "check the name and --region: aws sagemaker list-endpoints",
            )]
        }
        Err(error) => {
            return vec![Check::skip(
                "endpoint-ssm-access",
                format!("could not run: {}", error.summary()),
            )]
        }
    };
    let on: Vec<&str> = found
        .variants
        .iter()
        .filter(|(_, on)| *on)
        .map(|(v, _)| v.as_str())
        .collect();
    let off: Vec<&str> = found
        .variants
        .iter()
        .filter(|(_, on)| !*on)
        .map(|(v, _)| v.as_str())
        .collect();
    let mut checks = vec![if on.is_empty() {
        Check::fail(
            "endpoint-ssm-access",
            format!("no production variant of {name} has EnableSSMAccess ({})", off.join(", ")),
            "create an endpoint configuration whose variants set EnableSSMAccess=true and `aws sagemaker update-endpoint` to it (the account must be allow-listed)",
        )
    } else {
        Check::pass(
            "endpoint-ssm-access",
            format!(
                "EnableSSMAccess is on for variant(s) {} of {name}{}",
                on.join(", "),
                if off.is_empty() {
                    String::new()
                } else {
                    format!(" (off for {})", off.join(", "))
                }
            ),
        )
    }];
    if on.is_empty() {
        return checks;
    }
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    checks.push(match endpoint::instances(&logs, &found).await {
        Ok(instances) => {
            let ready: Vec<String> = instances.iter().filter(|i| i.ssm).map(|i| i.instance_id.clone()).collect();
            if ready.is_empty() {
                Check::warn(
                    "endpoint-instances",
                    format!("no instance of {name} shows its SSM agent yet (no <variant>/<instance>/ssm stream in {})", endpoint::log_group(name)),
                    "wait a few minutes after the endpoint is InService, then run doctor again",
                )
            } else {
                Check::pass("endpoint-instances", format!("{name} has {} instance(s) with SSM: {}", ready.len(), ready.join(", ")))
            }
        }
        Err(failure) => Check::skip("endpoint-instances", format!("could not run: {}", failure.message)),
    });
    checks
}
