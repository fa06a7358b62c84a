//! DescribeNotebookInstance, ListNotebookInstances (paged) and
//! DescribeNotebookInstanceLifecycleConfig: what doctor's role and
//! attribution checks read.

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::lists::{bad_token, name_contains};
use super::NotebookInstance;
use crate::paging::List;
use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiError, ApiResult, Event};
use crate::world::World;

/// ListNotebookInstances pages 1 to 100 notebooks (API reference); 10
/// without MaxResults (not documented: chosen).
const LIST: List = List {
    key: "NotebookInstances",
    sizes: 1..=100,
    default: 10,
    bad_token,
};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NotebookInput {
    notebook_instance_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ListInput {
    next_token: Option<String>,
    max_results: Option<i64>,
    sort_order: Option<String>,
    name_contains: Option<String>,
    status_equals: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LifecycleInput {
    notebook_instance_lifecycle_config_name: String,
}

fn notebook_arn(world: &World, name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{}:{}:notebook-instance/{}",
        world.region,
        world.identity.account,
        name.to_ascii_lowercase()
    )
}

fn summary(world: &World, notebook: &NotebookInstance) -> Value {
    let mut summary = json!({
        "NotebookInstanceName": notebook.name,
        "NotebookInstanceArn": notebook_arn(world, &notebook.name),
        "NotebookInstanceStatus": notebook.status,
        "Url": format!("{}.notebook.{}.sagemaker.aws", notebook.name.to_ascii_lowercase(), world.region),
        "InstanceType": notebook.instance_type,
        "CreationTime": notebook.creation_time,
        "LastModifiedTime": notebook.creation_time,
    });
    if !notebook.lifecycle_config.is_empty() {
        summary["NotebookInstanceLifecycleConfigName"] = json!(notebook.lifecycle_config);
    }
    summary
}

/// Sorted by name (the API's default SortBy), Descending unless asked
/// otherwise.
pub(super) fn list(state: &AppState, body: &[u8]) -> ApiResult {
    let req: ListInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "sagemaker:ListNotebookInstances", "*")?;
        let mut notebooks: Vec<&NotebookInstance> = world
            .sagemaker
            .notebook_instances
            .iter()
            .filter(|n| name_contains(&n.name, req.name_contains.as_deref()))
            .filter(|n| req.status_equals.as_ref().is_none_or(|s| *s == n.status))
            .collect();
        notebooks.sort_by(|a, b| a.name.cmp(&b.name));
        if req.sort_order.as_deref() != Some("Ascending") {
            notebooks.reverse();
        }
        LIST.answer(notebooks, req.max_results, req.next_token.as_deref(), |n| {
            summary(&world, n)
        })
    })();
    recorded(
        &mut world,
        "sagemaker:ListNotebookInstances",
        Event::default(),
        result,
    )
}

/// The scripts go out base64-encoded, as the API carries them.
pub(super) fn describe_lifecycle_config(state: &AppState, body: &[u8]) -> ApiResult {
    let req: LifecycleInput = input(body)?;
    let mut world = state.world();
    let name = req.notebook_instance_lifecycle_config_name;
    let arn = format!(
        "arn:aws:sagemaker:{}:{}:notebook-instance-lifecycle-config/{}",
        world.region,
        world.identity.account,
        name.to_ascii_lowercase()
    );
    let result = (|| {
        check_action(
            &world,
            "sagemaker:DescribeNotebookInstanceLifecycleConfig",
            &arn,
        )?;
        let config = world
            .sagemaker
            .notebook_lifecycle_configs
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "Unable to describe Notebook Instance Lifecycle Config '{name}'. \
                     (Reason: RecordNotFound)"
                ))
            })?;
        let hook = |script: &str| -> Value {
            if script.is_empty() {
                json!([])
            } else {
                json!([{ "Content": base64::engine::general_purpose::STANDARD.encode(script) }])
            }
        };
        Ok(json!({
            "NotebookInstanceLifecycleConfigArn": arn,
            "NotebookInstanceLifecycleConfigName": config.name,
            "OnCreate": hook(&config.on_create),
            "OnStart": hook(&config.on_start),
            "CreationTime": config.creation_time,
            "LastModifiedTime": config.creation_time,
        }))
    })();
    recorded(
        &mut world,
        "sagemaker:DescribeNotebookInstanceLifecycleConfig",
        Event::on(&arn),
        result,
    )
}

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: NotebookInput = input(body)?;
    let mut world = state.world();
    let arn = notebook_arn(&world, &req.notebook_instance_name);
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
        if !notebook.lifecycle_config.is_empty() {
            answer["NotebookInstanceLifecycleConfigName"] = json!(notebook.lifecycle_config);
        }
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
