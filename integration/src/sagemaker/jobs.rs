//! Training jobs: DescribeTrainingJob (with `RemoteDebugConfig`,
//! `SecondaryStatus`, `ResourceConfig`, network isolation),
//! ListTrainingJobs (paged, `StatusEquals`, `NameContains`) and
//! UpdateTrainingJob (`RemoteDebugConfig` only, while the job is
//! Downloading or Training, as the API reference says).

use serde::Deserialize;
use serde_json::json;

use super::lists::NewestFirst;
use super::TrainingJob;
use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiError, ApiResult, Event};
use crate::world::World;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JobInput {
    training_job_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateInput {
    training_job_name: String,
    #[serde(default)]
    remote_debug_config: Option<RemoteDebug>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RemoteDebug {
    enable_remote_debug: Option<bool>,
}

/// SageMaker lowercases the name in the ARN.
fn job_arn(world: &World, name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{}:{}:training-job/{}",
        world.region,
        world.identity.account,
        name.to_ascii_lowercase()
    )
}

/// SageMaker answers a missing training job with a ValidationException.
fn missing(name: &str) -> ApiError {
    ApiError::validation(format!(
        "Requested resource not found: training job {name} does not exist"
    ))
}

fn find<'w>(world: &'w mut World, name: &str) -> Result<&'w mut TrainingJob, ApiError> {
    world
        .sagemaker
        .training_jobs
        .iter_mut()
        .find(|j| j.name == name)
        .ok_or_else(|| missing(name))
}

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: JobInput = input(body)?;
    let mut world = state.world();
    let arn = job_arn(&world, &req.training_job_name);
    let result = (|| {
        check_action(&world, "sagemaker:DescribeTrainingJob", &arn)?;
        let job = find(&mut world, &req.training_job_name)?.clone();
        let mut answer = json!({
            "TrainingJobName": job.name,
            "TrainingJobArn": arn,
            "TrainingJobStatus": job.status,
            "SecondaryStatus": job.secondary_status,
            "RoleArn": job.role_arn,
            "AlgorithmSpecification": { "TrainingInputMode": "File" },
            "ResourceConfig": {
                "InstanceType": job.instance_type,
                "InstanceCount": job.instance_count,
                "VolumeSizeInGB": 30,
            },
            "StoppingCondition": { "MaxRuntimeInSeconds": 86400 },
            "CreationTime": job.creation_time,
            "ModelArtifacts": { "S3ModelArtifacts": "" },
            "EnableNetworkIsolation": job.network_isolation,
            "RemoteDebugConfig": { "EnableRemoteDebug": job.remote_debug },
        });
        if !job.subnets.is_empty() {
            answer["VpcConfig"] = json!({
                "Subnets": job.subnets,
                "SecurityGroupIds": job.security_groups,
            });
        }
        Ok(answer)
    })();
    recorded(
        &mut world,
        "sagemaker:DescribeTrainingJob",
        Event::on(&arn),
        result,
    )
}

pub(super) fn list(state: &AppState, body: &[u8]) -> ApiResult {
    let req: NewestFirst = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "sagemaker:ListTrainingJobs", "*")?;
        req.answer(
            "TrainingJobSummaries",
            &world.sagemaker.training_jobs,
            |j| {
                json!({
                    "TrainingJobName": j.name,
                    "TrainingJobArn": job_arn(&world, &j.name),
                    "CreationTime": j.creation_time,
                    "LastModifiedTime": j.creation_time,
                    "TrainingJobStatus": j.status,
                    "SecondaryStatus": j.secondary_status,
                })
            },
        )
    })();
    recorded(
        &mut world,
        "sagemaker:ListTrainingJobs",
        Event::default(),
        result,
    )
}

/// Only `RemoteDebugConfig` is applied. The API reference allows it while
/// `SecondaryStatus` is Downloading or Training; the wording of the refusal
/// is the fake's own (the real text is not public).
pub(super) fn update(state: &AppState, body: &[u8]) -> ApiResult {
    let req: UpdateInput = input(body)?;
    let mut world = state.world();
    let arn = job_arn(&world, &req.training_job_name);
    let result = (|| {
        check_action(&world, "sagemaker:UpdateTrainingJob", &arn)?;
        let job = find(&mut world, &req.training_job_name)?;
        if let Some(enable) = req.remote_debug_config.and_then(|r| r.enable_remote_debug) {
            if !matches!(job.secondary_status.as_str(), "Downloading" | "Training") {
                return Err(ApiError::validation(format!(
                    "RemoteDebugConfig can be updated only while the training job's secondary \
                     status is Downloading or Training; {} is {}",
                    job.name, job.secondary_status
                )));
            }
            job.remote_debug = enable;
        }
        Ok(json!({ "TrainingJobArn": arn }))
    })();
    recorded(
        &mut world,
        "sagemaker:UpdateTrainingJob",
        Event::on(&arn),
        result,
    )
}
