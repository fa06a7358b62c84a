//! DescribeSpace, ListSpaces and UpdateSpace.

use serde::Deserialize;
use serde_json::{json, Value};

use super::lists::name_contains;
use super::{find_space, space_arn, Space};
use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiError, ApiResult, Event};
use crate::world::World;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SpaceInput {
    domain_id: String,
    space_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ListInput {
    domain_id_equals: Option<String>,
    space_name_contains: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateInput {
    domain_id: String,
    space_name: String,
    #[serde(default)]
    space_settings: Option<Value>,
}

fn feature(on: bool) -> &'static str {
    if on {
        "ENABLED"
    } else {
        "DISABLED"
    }
}

fn describe_json(world: &World, space: &Space) -> Value {
    let app_settings = json!({
        "DefaultResourceSpec": super::resource_spec(space)
    });
    let settings_key = match space.app_type.as_str() {
        "CodeEditor" => "CodeEditorAppSettings",
        _ => "JupyterLabAppSettings",
    };
    json!({
        "DomainId": space.domain_id,
        "SpaceArn": space_arn(world, &space.domain_id, &space.name),
        "SpaceName": space.name,
        "Status": space.status,
        "CreationTime": space.creation_time,
        "LastModifiedTime": space.creation_time,
        "SpaceSettings": {
            "AppType": space.app_type,
            settings_key: app_settings,
            "RemoteAccess": feature(space.remote_access),
        },
        "OwnershipSettings": { "OwnerUserProfileName": space.owner },
        "SpaceSharingSettings": { "SharingType": "Private" },
        "SpaceDisplayName": space.name,
    })
}

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: SpaceInput = input(body)?;
    let mut world = state.world();
    let arn = space_arn(&world, &req.domain_id, &req.space_name);
    let result = (|| {
        check_action(&world, "sagemaker:DescribeSpace", &arn)?;
        let space = find_space(&mut world, &req.domain_id, &req.space_name)?.clone();
        Ok(describe_json(&world, &space))
    })();
    recorded(
        &mut world,
        "sagemaker:DescribeSpace",
        Event::on(&arn),
        result,
    )
}

pub(super) fn list(state: &AppState, body: &[u8]) -> ApiResult {
    let req: ListInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "sagemaker:ListSpaces", "*")?;
        let spaces: Vec<Value> = world
            .sagemaker
            .spaces
            .iter()
            .filter(|s| s.in_domain(req.domain_id_equals.as_deref()))
            .filter(|s| name_contains(&s.name, req.space_name_contains.as_deref()))
            .map(|s| {
                json!({
                    "DomainId": s.domain_id,
                    "SpaceName": s.name,
                    "Status": s.status,
                    "CreationTime": s.creation_time,
                    "LastModifiedTime": s.creation_time,
                    "SpaceSettingsSummary": {
                        "AppType": s.app_type,
                        "RemoteAccess": feature(s.remote_access),
                    },
                    "SpaceSharingSettingsSummary": { "SharingType": "Private" },
                    "OwnershipSettingsSummary": { "OwnerUserProfileName": s.owner },
                    "SpaceDisplayName": s.name,
                })
            })
            .collect();
        Ok(json!({ "Spaces": spaces }))
    })();
    recorded(&mut world, "sagemaker:ListSpaces", Event::default(), result)
}

/// Only `SpaceSettings.RemoteAccess` is applied; a running app keeps the
/// setting it started with until it is recreated.
pub(super) fn update(state: &AppState, body: &[u8]) -> ApiResult {
    let req: UpdateInput = input(body)?;
    let mut world = state.world();
    let arn = space_arn(&world, &req.domain_id, &req.space_name);
    let result = (|| {
        check_action(&world, "sagemaker:UpdateSpace", &arn)?;
        let space = find_space(&mut world, &req.domain_id, &req.space_name)?;
        let remote = req
            .space_settings
            .as_ref()
            .and_then(|s| s.get("RemoteAccess"))
            .and_then(Value::as_str);
        match remote {
            Some("ENABLED") => space.remote_access = true,
            Some("DISABLED") => space.remote_access = false,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'spaceSettings.remoteAccess' \
                     failed to satisfy constraint: Member must satisfy enum value set: [ENABLED, DISABLED]"
                )))
            }
            None => {}
        }
        Ok(json!({ "SpaceArn": arn }))
    })();
    recorded(&mut world, "sagemaker:UpdateSpace", Event::on(&arn), result)
}
