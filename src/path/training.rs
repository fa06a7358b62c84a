//! `<job>.training.sagemaker`: the helper's managed instance when it
//! registered one (today's behaviour, the SSM path), else the job's own
//! Session Manager targets `sagemaker-training-job:<job>_algo-<n>` when
//! remote debugging is on and the job is Training (DescribeTrainingJob).
//! SageMaker is asked only when the helper's lookup finds nothing, so
//! helper users need no SageMaker permission.

use aws_config::SdkConfig;
use aws_sdk_sagemaker::error::ProvideErrorMetadata;
use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;

use super::sagemaker_native::{self as native, NativeInfo};
use super::{Path, Reach};
use crate::error::{exit, AwsError, Failure};
use crate::resolve::{self, ResolveError, ResolveOptions};
use crate::target::Target;

/// What DescribeTrainingJob says about remote debugging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    pub arn: String,
    /// `InProgress`, `Completed`, `Failed`, `Stopping`, `Stopped`.
    pub status: String,
    /// `Starting`, `Downloading`, `Training`, `Uploading`, …
    pub secondary_status: String,
    pub remote_debug: bool,
    pub network_isolation: bool,
    pub instance_count: u32,
    pub role_arn: String,
}

impl Job {
    /// `sagemaker-training-job:<job>_algo-<n>`.
    pub fn target(&self, node: u32) -> String {
        format!("sagemaker-training-job:{}_algo-{node}", self.name)
    }

    /// Why a session cannot start on the job now, with what to do; `None`
    /// when remote debugging can be used.
    pub fn blocker(&self) -> Option<String> {
        let name = &self.name;
        if self.network_isolation {
            return Some(format!(
                "training job {name} runs with network isolation, which remote debugging does \
                 not support (start the job without EnableNetworkIsolation)"
            ));
        }
        if !self.remote_debug {
            return Some(format!(
                "remote debugging is off for training job {name}: `sm-ssh debug enable {name}` \
                 turns it on while the job is Downloading or Training"
            ));
        }
        if self.status != "InProgress" {
            return Some(format!(
                "training job {name} is {} ({}): remote debugging reaches running jobs only",
                self.status, self.secondary_status
            ));
        }
        if self.secondary_status != "Training" {
            return Some(format!(
                "training job {name} is not training yet (SecondaryStatus {}): connect once it \
                 is Training, or pass --wait",
                self.secondary_status
            ));
        }
        None
    }

    /// Whether waiting may end the blocker (the job has yet to start training).
    fn may_start_training(&self) -> bool {
        self.remote_debug
            && !self.network_isolation
            && self.status == "InProgress"
            && self.secondary_status != "Training"
    }
}

/// DescribeTrainingJob; `Ok(None)` when there is no such job.
pub async fn describe(
    client: &aws_sdk_sagemaker::Client,
    name: &str,
) -> Result<Option<Job>, AwsError> {
    let job = match client
        .describe_training_job()
        .training_job_name(name)
        .send()
        .await
    {
        Ok(job) => job,
        Err(error)
            if error.code() == Some("ValidationException")
                && error.message().is_some_and(|m| m.contains("not found")) =>
        {
            return Ok(None)
        }
        Err(error) => return Err(AwsError::from_sdk("sagemaker:DescribeTrainingJob", &error)),
    };
    Ok(Some(Job {
        name: job.training_job_name().unwrap_or(name).to_string(),
        arn: job.training_job_arn().unwrap_or_default().to_string(),
        status: job
            .training_job_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        secondary_status: job
            .secondary_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        remote_debug: job
            .remote_debug_config()
            .and_then(|c| c.enable_remote_debug())
            .unwrap_or(false),
        network_isolation: job.enable_network_isolation().unwrap_or(false),
        instance_count: job
            .resource_config()
            .and_then(|r| r.instance_count())
            .map_or(1, |n| n.max(1) as u32),
        role_arn: job.role_arn().unwrap_or_default().to_string(),
    }))
}

/// Given the outcome of the helper's lookup (made with
/// [`native::helper_options`], by `Path::resolve` or the warm-path cache).
pub async fn after_helper(
    sdk: &SdkConfig,
    target: &Target,
    opts: &ResolveOptions,
    helper: Result<resolve::Resolved, resolve::ResolveError>,
) -> anyhow::Result<Reach> {
    let Target::SageMaker(named) = target else {
        unreachable!("select() sends only training jobs here");
    };
    let helper =
        match native::helper_outcome(target, helper, "asking SageMaker about remote debugging")? {
            native::Helper::Found(reach) => return Ok(*reach),
            native::Helper::Fallback(why) => why,
        };
    let client = aws_sdk_sagemaker::Client::new(sdk);
    let deadline = opts.wait.map(|limit| Instant::now() + limit);
    loop {
        let job = match describe(&client, &named.name).await {
            Ok(Some(job)) => job,
            // No such job either: the helper's answer, with its own exit
            // code and hints, after the SageMaker side's.
            Ok(None) if opts.wait.is_none() => {
                return Err(anyhow::Error::new(helper).context(format!(
                    "there is no training job {} in {} (check the name and --region)",
                    named.name,
                    resolve::region_name(sdk)
                )))
            }
            Ok(None) => return super::ssm::resolve(sdk, target, opts).await,
            Err(error) => {
                let failure = Failure::new(error.exit_code(), error.message(None));
                return helper_or(sdk, target, opts, &helper, failure).await;
            }
        };
        let Some(blocker) = job.blocker() else {
            return node_reach(target, &job, opts.node);
        };
        match deadline {
            Some(deadline) if job.may_start_training() && Instant::now() < deadline => {
                tracing::info!(status = %job.secondary_status, "waiting for the job to train");
                tokio::time::sleep(native::POLL.min(deadline - Instant::now())).await;
            }
            Some(_) if job.may_start_training() => {
                return Err(native::neither(
                    &target.to_string(),
                    &helper,
                    native::blocked(format!("gave up waiting: {blocker}")),
                ))
            }
            _ => return helper_or(sdk, target, opts, &helper, native::blocked(blocker)).await,
        }
    }
}

/// The native path cannot help: with `--wait`, wait for the helper as
/// today; otherwise say why neither works.
async fn helper_or(
    sdk: &SdkConfig,
    target: &Target,
    opts: &ResolveOptions,
    helper: &ResolveError,
    native: Failure,
) -> anyhow::Result<Reach> {
    if opts.wait.is_some() {
        tracing::info!(why = %native.message, "remote debugging cannot be used; waiting for the helper");
        return super::ssm::resolve(sdk, target, opts).await;
    }
    Err(native::neither(&target.to_string(), helper, native))
}

fn node_reach(target: &Target, job: &Job, node: Option<usize>) -> anyhow::Result<Reach> {
    let node = node.unwrap_or(1);
    if node == 0 || node > job.instance_count as usize {
        return Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "training job {} has {} host(s), algo-1 to algo-{}: there is no node {node}",
                job.name, job.instance_count, job.instance_count
            ),
        )
        .into());
    }
    let session_target = job.target(node as u32);
    tracing::info!(%session_target, "{target}: remote debugging (SageMaker's own Session Manager target)");
    Ok(native::reach(
        Path::Training,
        &target.to_string(),
        session_target,
        NativeInfo {
            kind: "training",
            resource: job.name.clone(),
            status: job.secondary_status.clone(),
            node: format!("algo-{node}"),
            container: None,
        },
    ))
}

/// The running jobs with remote debugging on (ListTrainingJobs, then
/// DescribeTrainingJob for each: the summaries do not carry the setting).
pub async fn debuggable(sdk: &SdkConfig) -> Result<Vec<Job>, AwsError> {
    let client = aws_sdk_sagemaker::Client::new(sdk);
    let pages = client
        .list_training_jobs()
        .status_equals(aws_sdk_sagemaker::types::TrainingJobStatus::InProgress)
        .max_results(100)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("sagemaker:ListTrainingJobs", &e))?;
    let names: Vec<String> = pages
        .iter()
        .flat_map(|page| page.training_job_summaries())
        .filter_map(|s| s.training_job_name().map(str::to_string))
        .collect();
    let described: Vec<Result<Option<Job>, AwsError>> = stream::iter(names)
        .map(|name| {
            let client = client.clone();
            async move { describe(&client, &name).await }
        })
        .buffered(8)
        .collect()
        .await;
    let mut jobs = Vec::new();
    for job in described {
        if let Some(job) = job? {
            if job.remote_debug {
                jobs.push(job);
            }
        }
    }
    Ok(jobs)
}

/// UpdateTrainingJob with `RemoteDebugConfig.EnableRemoteDebug = true`.
pub async fn enable_remote_debug(sdk: &SdkConfig, name: &str) -> Result<(), AwsError> {
    aws_sdk_sagemaker::Client::new(sdk)
        .update_training_job()
        .training_job_name(name)
        .remote_debug_config(
            aws_sdk_sagemaker::types::RemoteDebugConfigForUpdate::builder()
                .enable_remote_debug(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sagemaker:UpdateTrainingJob", &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            name: "j".into(),
            status: "InProgress".into(),
            secondary_status: "Training".into(),
            remote_debug: true,
            instance_count: 2,
            ..Job::default()
        }
    }

    #[test]
    fn blockers_say_why_and_what_to_do() {
        assert_eq!(job().blocker(), None);
        let off = Job {
            remote_debug: false,
            ..job()
        };
        assert!(off.blocker().unwrap().contains("sm-ssh debug enable j"));
        let starting = Job {
            secondary_status: "Starting".into(),
            ..job()
        };
        assert!(starting
            .blocker()
            .unwrap()
            .contains("SecondaryStatus Starting"));
        assert!(starting.may_start_training());
        let isolated = Job {
            network_isolation: true,
            ..job()
        };
        assert!(isolated.blocker().unwrap().contains("network isolation"));
        assert!(!isolated.may_start_training());
        assert_eq!(job().target(2), "sagemaker-training-job:j_algo-2");
    }
}
