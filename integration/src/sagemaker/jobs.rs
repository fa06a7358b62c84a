//! Training jobs: DescribeTrainingJob (with `RemoteDebugConfig`,
//! `SecondaryStatus`, `ResourceConfig`, network isolation),
//! ListTrainingJobs (paged, `StatusEquals`, `NameContains`) and
//! UpdateTrainingJob (`RemoteDebugConfig` only, while the job is
//! Downloading or Training, as the API reference says).

use serde::Deserialize;
use serde_json::{json, Value};

use super::TrainingJob;
use crate::server::AppState;
use crate::ssm::{check_action, input, paging, recorded, ApiError, ApiResult, Event};
use crate::world::World;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JobInput {
    training_job_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ListInput {
    max_results: Option<i64>,
    next_token: Option<String>,
    status_equals: Option<String>,
    name_contains: Option<String>,
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

/// Newest first, as the service sorts by default (CreationTime, Descending).
pub(super) fn list(state: &AppState, body: &[u8]) -> ApiResult {
    let req: ListInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "sagemaker:ListTrainingJobs", "*")?;
        let (page, offset) = paging(
            req.max_results,
            1..=100,
            10,
            req.next_token.as_deref(),
            "jobs-",
        )?;
        let mut jobs: Vec<&TrainingJob> = world
            .sagemaker
            .training_jobs
            .iter()
            .filter(|j| req.status_equals.as_ref().is_none_or(|s| &j.status == s))
            .filter(|j| {
                req.name_contains.as_ref().is_none_or(|n| {
                    j.name
                        .to_ascii_lowercase()
                        .contains(&n.to_ascii_lowercase())
                })
            })
            .collect();
        jobs.sort_by(|a, b| b.creation_time.total_cmp(&a.creation_time));
        let summaries: Vec<Value> = jobs
            .iter()
            .skip(offset)
            .take(page)
            .map(|j| {
                json!({
                    "TrainingJobName": j.name,
                    "TrainingJobArn": job_arn(&world, &j.name),
                    "CreationTime": j.creation_time,
                    "LastModifiedTime": j.creation_time,
                    "TrainingJobStatus": j.status,
                    "SecondaryStatus": j.secondary_status,
                })
            })
            .collect();
        let mut answer = json!({ "TrainingJobSummaries": summaries });
        if offset + page < jobs.len() {
            answer["NextToken"] = json!(format!("jobs-{}", offset + page));
        }
        Ok(answer)
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
