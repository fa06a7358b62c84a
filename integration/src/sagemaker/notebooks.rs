//! DescribeNotebookInstance, for doctor.

use serde::Deserialize;
use serde_json::json;

use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiError, ApiResult, Event};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NotebookInput {
    notebook_instance_name: String,
}

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: NotebookInput = input(body)?;
    let mut world = state.world();
    let arn = format!(
        "arn:aws:sagemaker:{}:{}:notebook-instance/{}",
        world.region,
        world.identity.account,
        req.notebook_instance_name.to_ascii_lowercase()
    );
    let result = (|| {
        check_action(&world, "sagemaker:DescribeNotebookInstance", &arn)?;
        let notebook = world
            .sagemaker
            .notebook_instances
            .iter()
            .find(|n| n.name == req.notebook_instance_name)
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "RecordNotFound: notebook instance {} does not exist",
                    req.notebook_instance_name
                ))
            })?;
        let mut answer = json!({
            "NotebookInstanceArn": arn,
            "NotebookInstanceName": notebook.name,
            "NotebookInstanceStatus": notebook.status,
            "RoleArn": notebook.role_arn,
            "InstanceType": notebook.instance_type,
            "DirectInternetAccess": notebook.direct_internet_access,
            "CreationTime": notebook.creation_time,
            "LastModifiedTime": notebook.creation_time,
        });
        if !notebook.subnet_id.is_empty() {
            answer["SubnetId"] = json!(notebook.subnet_id);
            answer["SecurityGroups"] = json!(notebook.security_groups);
        }
        Ok(answer)
    })();
    recorded(
        &mut world,
        "sagemaker:DescribeNotebookInstance",
        Event::on(&arn),
        result,
    )
}
