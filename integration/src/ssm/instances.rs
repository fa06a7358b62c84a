//! DescribeInstanceInformation and the tag operations on managed instances.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{bad_token, check_action, input, recorded, target_arn, ApiError, ApiResult, Event};
use crate::paging::List;
use crate::server::AppState;
use crate::world::{Instance, World};

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DescribeInput {
    instance_information_filter_list: Vec<LegacyFilter>,
    filters: Vec<Filter>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

/// `InstanceInformationFilterList` entries use lower-case member names.
#[derive(Deserialize)]
struct LegacyFilter {
    key: String,
    #[serde(rename = "valueSet", default)]
    value_set: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Filter {
    key: String,
    #[serde(default)]
    values: Vec<String>,
}

const LIST: List = List {
    key: "InstanceInformationList",
    sizes: 5..=50,
    default: 10,
    bad_token,
};

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: DescribeInput = input(body)?;
    let mut world = state.world();
    let result = describe_in(&world, req);
    recorded(
        &mut world,
        "ssm:DescribeInstanceInformation",
        Event::default(),
        result,
    )
}

fn describe_in(world: &World, req: DescribeInput) -> ApiResult {
    check_action(world, "ssm:DescribeInstanceInformation", "*")?;
    let filters: Vec<(String, Vec<String>)> = req
        .instance_information_filter_list
        .into_iter()
        .map(|f| (f.key, f.value_set))
        .chain(req.filters.into_iter().map(|f| (f.key, f.values)))
        .collect();
    for (key, values) in &filters {
        if values.is_empty() {
            return Err(ApiError::new(
                "InvalidInstanceInformationFilterValue",
                format!("The filter {key} has no values."),
            ));
        }
        if !is_known_key(key) {
            return Err(ApiError::new(
                "InvalidFilterKey",
                format!("The filter key {key} is not valid."),
            ));
        }
    }
    let matching: Vec<&Instance> = world
        .instances
        .values()
        .filter(|i| !i.native && filters.iter().all(|(k, v)| matches(i, k, v)))
        .collect();
    LIST.answer(
        matching,
        req.max_results,
        req.next_token.as_deref(),
        describe_one,
    )
}

fn is_known_key(key: &str) -> bool {
    matches!(
        key,
        "InstanceIds"
            | "AgentVersion"
            | "PingStatus"
            | "PlatformTypes"
            | "ActivationIds"
            | "IamRole"
            | "ResourceType"
            | "AssociationStatus"
            | "tag-key"
    ) || key.starts_with("tag:")
}

/// Values of one filter are OR'ed; the caller AND's the filters.
fn matches(i: &Instance, key: &str, values: &[String]) -> bool {
    let any = |field: &str| values.iter().any(|v| v == field);
    match key {
        "InstanceIds" => any(&i.id),
        "AgentVersion" => any(&i.agent_version),
        "PingStatus" => any(ping_status(i)),
        "PlatformTypes" => any(&i.platform_type),
        "ActivationIds" => any(&i.activation_id),
        "IamRole" => any(&i.iam_role),
        "ResourceType" => any(&i.resource_type),
        "AssociationStatus" => false,
        "tag-key" => values.iter().any(|k| i.tags.contains_key(k)),
        tag => {
            let key = tag.trim_start_matches("tag:");
            i.tags.get(key).is_some_and(|v| any(v))
        }
    }
}

fn ping_status(i: &Instance) -> &'static str {
    match i.ping_status {
        crate::world::PingStatus::Online => "Online",
        crate::world::PingStatus::ConnectionLost => "ConnectionLost",
        crate::world::PingStatus::Inactive => "Inactive",
    }
}

fn describe_one(i: &Instance) -> Value {
    let mut v = json!({
        "InstanceId": i.id,
        "PingStatus": ping_status(i),
        "LastPingDateTime": i.last_ping,
        "AgentVersion": i.agent_version,
        "IsLatestVersion": false,
        "PlatformType": i.platform_type,
        "ResourceType": i.resource_type,
        "RegistrationDate": i.registration_date,
        "IPAddress": i.ip_address,
        "ComputerName": i.computer_name,
        "IamRole": i.iam_role,
    });
    if !i.activation_id.is_empty() {
        v["ActivationId"] = json!(i.activation_id);
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagTarget {
    resource_type: String,
    resource_id: String,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    value: String,
}

/// Runs a tag operation on the named managed instance's tags.
fn with_tags(
    state: &AppState,
    action: &str,
    body: &[u8],
    op: impl FnOnce(&mut BTreeMap<String, String>, TagTarget) -> ApiResult,
) -> ApiResult {
    let req: TagTarget = input(body)?;
    let mut world = state.world();
    let id = req.resource_id.clone();
    let result = (|| {
        check_action(&world, action, &target_arn(&world, &id))?;
        if req.resource_type != "ManagedInstance" {
            return Err(ApiError::new(
                "InvalidResourceType",
                format!(
                    "The fake supports tags on ManagedInstance only, not {}",
                    req.resource_type
                ),
            ));
        }
        let instance = world.instances.get_mut(&id).ok_or_else(|| {
            ApiError::new("InvalidResourceId", "The resource ID is not valid. Verify that you entered the correct ID and try again.")
        })?;
        op(&mut instance.tags, req)
    })();
    recorded(&mut world, action, Event::on(&id), result)
}

pub(super) fn list_tags(state: &AppState, body: &[u8]) -> ApiResult {
    with_tags(state, "ssm:ListTagsForResource", body, |tags, _| {
        let list: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({ "Key": k, "Value": v }))
            .collect();
        Ok(json!({ "TagList": list }))
    })
}

pub(super) fn add_tags(state: &AppState, body: &[u8]) -> ApiResult {
    with_tags(state, "ssm:AddTagsToResource", body, |tags, req| {
        if tags.len()
            + req
                .tags
                .iter()
                .filter(|t| !tags.contains_key(&t.key))
                .count()
            > 50
        {
            return Err(ApiError::new(
                "TooManyTagsError",
                "The Targets parameter includes too many tags. Remove one or more tags and try the command again.",
            ));
        }
        for t in req.tags {
            tags.insert(t.key, t.value);
        }
        Ok(json!({}))
    })
}

pub(super) fn remove_tags(state: &AppState, body: &[u8]) -> ApiResult {
    with_tags(state, "ssm:RemoveTagsFromResource", body, |tags, req| {
        for k in req.tag_keys {
            tags.remove(&k);
        }
        Ok(json!({}))
    })
}
