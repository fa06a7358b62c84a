//! DescribeTrainingJob, for doctor.

use serde::Deserialize;
use serde_json::json;

use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiResult, Event};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JobInput {
    training_job_name: String,
}

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: JobInput = input(body)?;
    let mut world = state.world();
    let arn = format!(
        "arn:aws:sagemaker:{}:{}:training-job/{}",
        world.region,
        world.identity.account,
        req.training_job_name.to_ascii_lowercase()
    );
    let result = (|| {
        check_action(&world, "sagemaker:DescribeTrainingJob", &arn)?;
        let job = world
            .sagemaker
            .training_jobs
            .iter()
            .find(|j| j.name == req.training_job_name)
            .ok_or_else(|| {
                crate::ssm::ApiError::validation(format!(
                    "Requested resource not found: training job {} does not exist",
                    req.training_job_name
                ))
            })?;
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
